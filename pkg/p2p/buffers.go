package p2p

import "sync"

// bufPool recycles piece-sized buffers: one pull moves hundreds of pieces,
// and a fresh 1 MiB slice per piece is garbage the GC must chase.
type bufPool struct {
	size int64
	pool sync.Pool
}

func newBufPool(size int64) *bufPool {
	return &bufPool{size: size, pool: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

// get returns a buffer of length n; larger than a piece (a peer asking with
// another piece size) gets a plain allocation.
func (b *bufPool) get(n int64) []byte {
	if b == nil || n > b.size {
		return make([]byte, n)
	}
	return (*b.pool.Get().(*[]byte))[:n]
}

func (b *bufPool) put(buf []byte) {
	if b != nil && int64(cap(buf)) == b.size {
		buf = buf[:cap(buf)]
		b.pool.Put(&buf)
	}
}
