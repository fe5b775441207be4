//go:build integration

package p2pbench

import (
	"crypto/rand"
	"io"
	"os"
	"testing"
	"time"
)

// TestLinksAreShaped checks what the benchmark's figures rest on: a node's
// link carries about its rate and no more, in both directions, between
// namespaces linked only through the switch, its counters see what it sent,
// and the namespaces are gone after Close.
func TestLinksAreShaped(t *testing.T) {
	const rate, bits = "40mbit", 40e6
	topo, err := NewTopology(2, rate)
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	ln, err := topo.Nodes[1].Listen(NodeIP(1) + ":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 4 << 20 // 0.84 s at 40 Mbit/s
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // echo the 4 MiB back: the other direction
				defer c.Close()
				_, _ = io.CopyN(c, c, size)
			}()
		}
	}()
	c, err := topo.Nodes[0].DialContext(t.Context(), "tcp", NodeIP(1)+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tx0, err := topo.Nodes[0].TxBytes()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go func() { _, _ = io.CopyN(c, rand.Reader, size) }()
	if _, err := io.CopyN(io.Discard, c, size); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// Both directions run at once, each on its own shaped side of the
	// links: the round trip takes about one transfer time, not less.
	want := time.Duration(float64(size*8) / bits * float64(time.Second))
	if took < want*9/10 || took > want*3 {
		t.Errorf("4 MiB each way over a %s link took %v, want about %v", rate, took, want)
	}
	tx1, err := topo.Nodes[0].TxBytes()
	if err != nil {
		t.Fatal(err)
	}
	if sent := tx1 - tx0; sent < size {
		t.Errorf("node-0's link counted %d bytes sent, want at least the %d it sent", sent, size)
	}
	paths := []string{topo.Registry.Path(), topo.Nodes[0].Path()}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("namespace %s still exists after Close", p)
		}
	}
}
