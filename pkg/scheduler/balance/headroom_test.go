package balance

import (
	"slices"
	"testing"
)

func TestRecentShapesForgetOldAndRare(t *testing.T) {
	t.Parallel()
	var r recentShapes
	var out [shapeSlots]shape
	large := shape{8000, 32 << 30, 4e9}
	r.observe(large, &out)
	// More distinct shapes than slots: the least recently seen goes first, the large one.
	for i := range shapeSlots {
		r.observe(shape{int64(100 + i), 1 << 20, 0}, &out)
	}
	n := r.observe(shape{100, 1 << 20, 0}, &out)
	if n != shapeSlots || slices.Contains(out[:n], large) {
		t.Fatalf("after %d newer shapes: %d shapes %v, want %d without the large one", shapeSlots, n, out[:n], shapeSlots)
	}
	// A shape not seen for shapeMemory pods is no longer returned, though its slot stays.
	r.observe(large, &out)
	for range shapeMemory {
		n = r.observe(shape{100, 1 << 20, 0}, &out)
	}
	if slices.Contains(out[:n], large) || n == 0 {
		t.Fatalf("after %d pods of another shape: %v, want it without the large shape", shapeMemory, out[:n])
	}
}

func TestShapeTakesRoom(t *testing.T) {
	t.Parallel()
	big := shape{6000, 1 << 30, 0} // needs no bandwidth
	for _, tc := range []struct {
		free, pod shape
		want      bool
	}{
		{shape{6500, 4 << 30, 0}, shape{1000, 1 << 20, 1e8}, true},  // 5.5 cores left
		{shape{8000, 4 << 30, 0}, shape{1000, 1 << 20, 1e8}, false}, // 7 cores left
		{shape{5000, 4 << 30, 0}, shape{1000, 1 << 20, 1e8}, false}, // no room to take
		{shape{6500, 1 << 30, 5e9}, shape{100, 1 << 20, 1e8}, true}, // memory ends it
		{shape{9000, 9 << 30, -1}, shape{100, 1 << 20, 1e8}, false}, // bandwidth not needed
	} {
		if got := big.takesRoom(tc.free, tc.pod); got != tc.want {
			t.Errorf("takesRoom(free %v, pod %v) = %v, want %v", tc.free, tc.pod, got, tc.want)
		}
	}
}
