package p2p

import (
	"crypto/sha256"
	"encoding/hex"
)

// FaultCorruptUploads is a named fault: the puller built from c flips one byte of every piece
// it serves to peers and announces the true piece digest, like a bad disk or NIC.
func FaultCorruptUploads(c *Config) {
	c.uploadFault = func(piece []byte) string {
		piece[len(piece)/2] ^= 0xff
		return ""
	}
}

// FaultLyingUploads is a named fault: pieces served to peers are corrupted and announced with
// the digest of the corrupted bytes, like a compromised peer; only the whole-blob check can
// catch it.
func FaultLyingUploads(c *Config) {
	c.uploadFault = func(piece []byte) string {
		piece[len(piece)/2] ^= 0xff
		sum := sha256.Sum256(piece)
		return hex.EncodeToString(sum[:])
	}
}
