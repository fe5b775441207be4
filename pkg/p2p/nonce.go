package p2p

import (
	"errors"
	"sync"
	"time"
)

// maxNonces bounds the replay cache: past it, new peer requests are refused
// until old nonces age out of the clock window (a burst of about 8000 piece
// requests a second for two minutes fits).
const maxNonces = 1 << 20

// nonceCache remembers the nonces of signed peer requests for as long as
// their time is inside the clock window, so each signature is used once.
type nonceCache struct {
	mu        sync.Mutex
	seen      map[string]time.Time // node|nonce -> when it leaves the window
	lastSweep time.Time
}

func newNonceCache() *nonceCache { return &nonceCache{seen: map[string]time.Time{}} }

var errReplay = errors.New("request replayed: its nonce was already used")

// use records key (node|nonce) of a request signed at ts, or fails if it
// was seen already.
func (c *nonceCache) use(key string, ts time.Time) error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.lastSweep) > maxClockSkew/4 {
		for k, exp := range c.seen {
			if now.After(exp) {
				delete(c.seen, k)
			}
		}
		c.lastSweep = now
	}
	if _, ok := c.seen[key]; ok {
		return errReplay
	}
	if len(c.seen) >= maxNonces {
		return errors.New("too many peer requests within the clock window: retry shortly")
	}
	c.seen[key] = ts.Add(maxClockSkew + time.Second)
	return nil
}
