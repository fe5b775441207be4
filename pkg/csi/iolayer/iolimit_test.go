package iolayer

import (
	"context"
	"testing"
	"time"
)

// A signal to the app's thread interrupts its FUSE request and cancels the request's context:
// the throttled write must still pass (late), not fail with EINTR.
func TestThrottledWriteIgnoresInterrupts(t *testing.T) {
	il := newIOLimiter(Limits{WriteBytesPerSecond: 10 << 20, WriteIOPS: 100})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the kernel's FUSE_INTERRUPT
	start := time.Now()
	for i := 0; i < 3; i++ {
		if errno := il.wait(ctx, il.writeBytes, il.writeOps, 1<<20,
			&il.counters.writeThrottledNs); errno != 0 {
			t.Fatalf("write %d under an interrupted context failed with %v, want it to wait for its tokens",
				i, errno)
		}
	}
	// 3 MiB at 10 MiB/s from an empty bucket: about 0.3 s, so the limit still held.
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("3 MiB passed a 10 MiB/s limit in %v, want ≥ 0.25s", d)
	}
	if il.counters.writeThrottledNs.Load() == 0 {
		t.Error("time spent throttled was not counted")
	}
}
