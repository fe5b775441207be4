package schedbench

import (
	"testing"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
	configv1 "github.com/berth-dev/berth/pkg/scheduler/apis/config/v1"
)

// berthArgs returns BerthBalance's default args with PackAboveFillPercent set to pack.
func berthArgs(t *testing.T, pack int64) *config.BerthBalanceArgs {
	t.Helper()
	var v1args configv1.BerthBalanceArgs
	configv1.SetDefaults_BerthBalanceArgs(&v1args)
	v1args.PackAboveFillPercent = &pack
	var args config.BerthBalanceArgs
	if err := configv1.Convert_v1_BerthBalanceArgs_To_config_BerthBalanceArgs(&v1args, &args, nil); err != nil {
		t.Fatalf("convert args: %v", err)
	}
	return &args
}

// TestPackingOnlyActsWhenNearlyFull runs the simulated quality matrix with packing from 75 %
// (the lowest threshold that leaves the balance at the matrix's 70 % alone; the default is 85 %)
// and off. Below the threshold the two must place every pod alike, so
// the balance measured at 70 % fill (CV and fullest node) is the same on every shape, mix and
// seed; past it, packing must leave room for more pods: more placed over the matrix, and in no
// cell fewer on the mean over seeds.
func TestPackingOnlyActsWhenNearlyFull(t *testing.T) {
	t.Parallel()
	mp := MatrixParams{Nodes: 12, Seeds: 5, Shapes: Shapes, Workloads: Workloads}
	packed, err := SimulateMatrix(t.Context(), mp, berthArgs(t, 75))
	if err != nil {
		t.Fatalf("simulate with packing: %v", err)
	}
	balanced, err := SimulateMatrix(t.Context(), mp, berthArgs(t, 100))
	if err != nil {
		t.Fatalf("simulate without packing: %v", err)
	}
	var withPack, without int
	for i, c := range packed {
		var cellPack, cellBal int
		for s, q := range c.Berth {
			b := balanced[i].Berth[s]
			if q.CV != b.CV || q.Fullest != b.Fullest {
				t.Errorf("%s / %s / seed %d: at 70 %% fill packing changed the balance: CV %.3f, fullest %.2f; "+
					"without packing CV %.3f, fullest %.2f", c.Shape, c.Workload, s+1, q.CV, q.Fullest, b.CV, b.Fullest)
			}
			cellPack += q.Placed
			cellBal += b.Placed
		}
		if cellPack < cellBal {
			t.Errorf("%s / %s: packing placed %d pods over %d seeds, balancing alone %d", c.Shape, c.Workload,
				cellPack, mp.Seeds, cellBal)
		}
		withPack += cellPack
		without += cellBal
	}
	if withPack <= without {
		t.Errorf("packing placed %d pods over the matrix, balancing alone %d: want more", withPack, without)
	}
	t.Logf("pods placed over the matrix: %d with packing, %d without (%+.1f %%)", withPack, without,
		100*(float64(withPack)/float64(without)-1))
}
