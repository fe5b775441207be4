package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/pkg/ipam"
)

// TestJournalSurvivesAndRefusesCorruption: the journal reads back what was
// saved; a damaged one stops the agent with a message saying what to check,
// instead of starting empty and handing the node's addresses out again.
func TestJournalSurvivesAndRefusesCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), journalFile)
	st := newState()
	buf := ipam.NewBufferHandle("n1", "net")
	st.Pools["p"] = &poolState{Target: 4, Network: "net",
		Free: []ipam.Allocation{{Pool: "p", IP: netip.MustParsePrefix("10.0.0.5/24"), Handle: buf}}}
	pod := ipam.Handle{ContainerID: "c1", IfName: "eth0"}
	st.Pending = append(st.Pending, op{Kind: opAssign,
		Alloc: ipam.Allocation{Pool: "p", IP: netip.MustParsePrefix("10.0.0.6/24"), Handle: pod}, From: buf})
	if err := st.save(path); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := got.pendingAssign(pod); !ok ||
		got.Pending[i].Alloc.IP.Addr() != netip.MustParseAddr("10.0.0.6") ||
		!got.holds("p", netip.MustParseAddr("10.0.0.5")) {
		t.Fatalf("journal read back: %+v", got)
	}
	if err := os.WriteFile(path, []byte(`{"pools":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(path); err == nil || !strings.Contains(err.Error(), "cni-vlan ipam list") {
		t.Fatalf("damaged journal: got %v, want an error saying what to check", err)
	}
	if st, err := loadState(filepath.Join(t.TempDir(), "none")); err != nil || len(st.Pools) != 0 {
		t.Fatalf("missing journal (first start): %+v, %v", st, err)
	}
}
