package peers

import (
	"fmt"
	"testing"
)

func TestParseStatic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"a=127.0.0.1:1,b=127.0.0.1:2", 2, false},
		{"", 0, false},
		{"a", 0, true},
		{"a=nohostport", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseStatic(tt.in)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("ParseStatic(%q) = %v, %v; want %d peers, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestRankStable checks the two properties p2p relies on: every node computes
// the same owner, and removing one peer only moves the keys it owned.
func TestRankStable(t *testing.T) {
	t.Parallel()
	var ps []Peer
	for i := range 8 {
		ps = append(ps, Peer{Name: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
	}
	owners := map[string]int{}
	moved := 0
	for k := range 2000 {
		key := fmt.Sprintf("sha256:%064x", k)
		a := Rank(key, ps)[0]
		rev := append([]Peer(nil), ps...)
		for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
			rev[i], rev[j] = rev[j], rev[i]
		}
		if b := Rank(key, rev)[0]; a != b {
			t.Fatalf("owner of %s depends on peer order: %v vs %v", key, a, b)
		}
		owners[a.Name]++
		if c := Rank(key, ps[1:])[0]; a.Name != "node-0" && c != a {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d keys moved although their owner stayed", moved)
	}
	for n, c := range owners {
		if c < 150 || c > 350 {
			t.Errorf("node %s owns %d of 2000 keys: want about 250", n, c)
		}
	}
}
