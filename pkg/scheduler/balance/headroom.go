package balance

import "sync"

// Headroom for the pods still to come. Balancing brings every node to "too full for the next
// large pod" at about the same moment, so the first large pod that fits nowhere arrives while the
// cluster as a whole still has room. Packing (best fit per dimension) keeps the free capacity in
// few pieces, but a small pod may still take the piece a pod of another shape needs. The plugin
// therefore remembers the shapes (CPU, memory, bandwidth) of the pods it scored recently; while
// PreScore packs some dimension, Score marks a node where this pod would end the room for
// another of those shapes, and NormalizeScore ranks marked nodes last: the pod goes to crumbs no
// recent shape can use, and the room stays for the pod that needs it. A pod of the shape itself
// takes the room as usual.

// shapeSlots is how many distinct pod shapes the plugin remembers. Real clusters schedule a
// handful of request shapes per deployment wave; a table this small keeps Score's per-node check
// to a few comparisons and the state free of allocations.
const shapeSlots = 8

// shapeMemory is how many scored pods a shape is remembered for after it was last seen, so that
// a one-off large pod stops reserving room once such pods no longer come.
const shapeMemory = 1000

// shape is a pod's demand in the three dimensions: milli-CPU, memory bytes, bandwidth bit/s.
type shape [3]int64

// recentShapes remembers the distinct shapes of the last pods PreScore saw, least recently seen
// out first. PreScore runs once per pod, so its mutex is not on Score's path.
type recentShapes struct {
	mu    sync.Mutex
	tick  uint64
	slots [shapeSlots]struct {
		shape shape
		seen  uint64 // tick of the last pod of this shape; 0 = empty slot
	}
}

// observe records sh and copies the shapes seen within shapeMemory pods into out, returning how
// many it copied.
func (r *recentShapes) observe(sh shape, out *[shapeSlots]shape) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tick++
	oldest := 0
	found := false
	for i := range r.slots {
		if r.slots[i].seen != 0 && r.slots[i].shape == sh {
			r.slots[i].seen, found = r.tick, true
			break
		}
		if r.slots[i].seen < r.slots[oldest].seen {
			oldest = i
		}
	}
	if !found {
		r.slots[oldest].shape, r.slots[oldest].seen = sh, r.tick
	}
	n := 0
	for i := range r.slots {
		if s := r.slots[i]; s.seen != 0 && r.tick-s.seen < shapeMemory {
			out[n] = s.shape
			n++
		}
	}
	return n
}

// fits reports whether a node with free room takes sh (a dimension sh does not use always fits).
func (sh shape) fits(free shape) bool {
	for d := range sh {
		if sh[d] > 0 && sh[d] > free[d] {
			return false
		}
	}
	return true
}

// takesRoom reports whether placing a pod of demand p on a node with free room ends the node's
// room for sh.
func (sh shape) takesRoom(free, p shape) bool {
	if !sh.fits(free) {
		return false
	}
	// No overflow: a dimension sh uses has free[d] >= sh[d] > 0 here, and demands are >= 0.
	var after shape
	for d := range free {
		after[d] = free[d] - p[d]
	}
	return !sh.fits(after)
}
