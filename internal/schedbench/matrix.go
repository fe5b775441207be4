package schedbench

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// MatrixParams sizes the quality matrix.
type MatrixParams struct {
	// Nodes is the size of each node group (one per scheduler, shape, workload and seed).
	Nodes int
	// Seeds is the number of pod sequences per cell (seeds 1..Seeds).
	Seeds int
	// Parallel is how many (shape, workload, seed) runs fill their groups at the same time; each
	// group is still filled one pod at a time.
	Parallel  int
	Shapes    []Shape
	Workloads []Workload
}

// Cell is one shape × workload of the matrix: per seed, each scheduler's Quality, the
// capacity bound on pods placed, the network CV of an offline placement (OfflineNetworkCV;
// -1 where it placed not every pod) and the CVs of an offline placement balancing all three
// dimensions (OfflineBalanceCV; -1s likewise).
type Cell struct {
	Shape, Workload string
	Default, Berth  []Quality
	Bound           []int
	OfflineNetCV    []float64
	OfflineCV       [][3]float64
}

func newCell(sh Shape, w Workload, seeds int) Cell {
	return Cell{Shape: sh.Name, Workload: w.Name, Default: make([]Quality, seeds), Berth: make([]Quality, seeds),
		Bound: make([]int, seeds), OfflineNetCV: make([]float64, seeds), OfflineCV: make([][3]float64, seeds)}
}

// seedRun is what one seed of a cell measured.
type seedRun struct {
	Default, Berth Quality
	Bound          int
	OfflineNetCV   float64
	OfflineCV      [3]float64
}

// record stores the run of the seed with index i (seed i+1).
func (c *Cell) record(i int, r seedRun) {
	c.Default[i], c.Berth[i], c.Bound[i], c.OfflineNetCV[i], c.OfflineCV[i] = r.Default, r.Berth,
		r.Bound, r.OfflineNetCV, r.OfflineCV
}

// cellSequence is the seed's pod sequence for a group of nodes: 40 pods per 16 cores, more than
// the group can hold, so that the fill always ends at a pod that fits nowhere.
func cellSequence(w Workload, nodes []*v1.Node, seed uint64) []Kind {
	units := 0.0
	for _, node := range nodes {
		units += float64(node.Status.Allocatable.Cpu().MilliValue()) / float64(NodeCPU.MilliValue())
	}
	return w.Sequence(int(40*units), seed)
}

// measureSeed adds to the two schedulers' fills of seq on nodes what does not depend on any
// scheduler: the capacity bound and the offline placements' CVs.
func measureSeed(def, berth Quality, seq []Kind, nodes []*v1.Node) seedRun {
	r := seedRun{Default: def, Berth: berth, Bound: CapacityBoundOf(seq, nodes), OfflineNetCV: -1,
		OfflineCV: [3]float64{-1, -1, -1}}
	if v, ok := OfflineNetworkCV(seq, nodes); ok {
		r.OfflineNetCV = v
	}
	if v, ok := OfflineBalanceCV(seq, nodes); ok {
		r.OfflineCV = v
	}
	return r
}

// RunMatrix fills, for every shape, workload and seed, two fresh node groups of mp.Nodes nodes
// with the same pod sequence, one per scheduler, and deletes them afterwards. One scheduler
// process serves both profiles, as in a cluster running both.
func RunMatrix(ctx context.Context, c kubernetes.Interface, dir, kubeconfig string, mp MatrixParams,
	logf func(string, ...any)) ([]Cell, error) {
	stop, err := StartScheduler(ctx, dir, Config(kubeconfig, 100))
	if err != nil {
		return nil, err
	}
	defer stop()
	cells := make([]Cell, 0, len(mp.Shapes)*len(mp.Workloads))
	for _, sh := range mp.Shapes {
		for _, w := range mp.Workloads {
			cells = append(cells, newCell(sh, w, mp.Seeds))
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, mp.Parallel))
	for si, sh := range mp.Shapes {
		for wi, w := range mp.Workloads {
			cell := &cells[si*len(mp.Workloads)+wi]
			for seed := range mp.Seeds {
				id := fmt.Sprintf("m%d-%d-%d", si, wi, seed)
				g.Go(func() error {
					start := time.Now()
					r, err := runCellSeed(gctx, c, id, sh, w, mp.Nodes, uint64(seed+1))
					if err != nil {
						return fmt.Errorf("%s / %s / seed %d: %w", sh.Name, w.Name, seed+1, err)
					}
					cell.record(seed, r)
					logf("%s / %s / seed %d (%s): default %+v; berth %+v; bound %d", sh.Name, w.Name,
						seed+1, time.Since(start).Round(time.Second), r.Default, r.Berth, r.Bound)
					return nil
				})
			}
		}
	}
	return cells, g.Wait()
}

// runCellSeed fills one group per scheduler, concurrently, with the seed's sequence.
func runCellSeed(ctx context.Context, c kubernetes.Interface, id string, sh Shape, w Workload, n int,
	seed uint64) (seedRun, error) {
	groups := [2]string{id + "-d", id + "-b"}
	var nodes [2][]*v1.Node
	for i, grp := range groups {
		var err error
		if nodes[i], err = CreateShapedNodes(ctx, c, grp, sh, n, map[string]string{"group": grp}); err != nil {
			return seedRun{}, err
		}
	}
	seq := cellSequence(w, nodes[0], seed)
	var out [2]Quality
	g, gctx := errgroup.WithContext(ctx)
	for i, name := range []string{DefaultSchedulerName, BerthSchedulerName} {
		g.Go(func() error {
			var err error
			out[i], err = FillGroup(gctx, c, name, groups[i], groups[i], nodes[i], seq, time.Minute)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return seedRun{}, err
	}
	for i, grp := range groups {
		if err := DeletePods(ctx, c, grp); err != nil {
			return seedRun{}, err
		}
		for _, node := range nodes[i] {
			if err := c.CoreV1().Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{}); err != nil {
				return seedRun{}, fmt.Errorf("failed to delete node %s: %w", node.Name, err)
			}
		}
	}
	return measureSeed(out[0], out[1], seq, nodes[0]), nil
}

// spread formats mean (min-max) of xs with format f.
func spread(xs []float64, f string) string {
	if len(xs) == 0 {
		return "n/a"
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, x := range xs {
		lo, hi, sum = min(lo, x), max(hi, x), sum+x
	}
	return fmt.Sprintf(f+" ("+f+"-"+f+")", sum/float64(len(xs)), lo, hi)
}

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(max(1, len(xs)))
}

func column(qs []Quality, get func(Quality) float64) []float64 {
	out := make([]float64, len(qs))
	for i, q := range qs {
		out[i] = get(q)
	}
	return out
}

// misses lists the cell's goals (issue 19) that berth does not meet, on the means over seeds:
// network CV ≤ 0.10 and ≤ 0.35× the default's, CPU and memory CV ≤ the default's + 0.02, fullest
// node ≤ the default's, and pods placed ≥ the default's on every seed.
func (c Cell) misses() []string {
	var out []string
	cvOf := func(qs []Quality, d int) float64 { return mean(column(qs, func(q Quality) float64 { return q.CV[d] })) }
	dn, bn := cvOf(c.Default, 2), cvOf(c.Berth, 2)
	if bn > 0.10 {
		out = append(out, fmt.Sprintf("net CV %.3f > 0.10", bn))
	}
	if bn > 0.35*dn {
		out = append(out, fmt.Sprintf("net CV %.2fx default > 0.35x", bn/dn))
	}
	for d, name := range []string{"CPU", "mem"} {
		if b, df := cvOf(c.Berth, d), cvOf(c.Default, d); b > df+0.02 {
			out = append(out, fmt.Sprintf("%s CV +%.3f > +0.02", name, b-df))
		}
	}
	full := func(q Quality) float64 { return q.Fullest }
	if b, d := mean(column(c.Berth, full)), mean(column(c.Default, full)); b > d+1e-9 {
		out = append(out, fmt.Sprintf("fullest node %.0f %% > %.0f %%", 100*b, 100*d))
	}
	fewer := 0
	for i := range c.Berth {
		if c.Berth[i].Placed < c.Default[i].Placed {
			fewer++
		}
	}
	if fewer > 0 {
		out = append(out, fmt.Sprintf("placed < default on %d/%d seeds", fewer, len(c.Berth)))
	}
	return out
}

// MatrixTable renders the matrix as the Markdown table kept in docs/scheduler.md: mean and
// (min-max) over seeds, one row per scheduler, and the goals berth misses in that cell.
func MatrixTable(cells []Cell) string {
	var b strings.Builder
	b.WriteString("| nodes | pods | scheduler | CV CPU | CV memory | CV network | fullest node " +
		"| pods placed | capacity bound | offline network CV | offline balanced CV CPU / memory / network " +
		"| goals missed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range cells {
		bound := make([]float64, len(c.Bound))
		for i, x := range c.Bound {
			bound[i] = float64(x)
		}
		for i, qs := range [][]Quality{c.Default, c.Berth} {
			row := []string{c.Shape, c.Workload, DefaultSchedulerName, "", "", "", "", "", "", "", "", ""}
			if i == 1 {
				row[0], row[1], row[2] = "", "", BerthSchedulerName
				row[8] = spread(bound, "%.0f")
				row[9] = spread(c.OfflineNetCV, "%.3f")
				row[10] = c.offlineBalance()
				row[11] = strings.Join(c.misses(), "; ")
				if row[11] == "" {
					row[11] = "none"
				}
			}
			for d := range 3 {
				row[3+d] = spread(column(qs, func(q Quality) float64 { return q.CV[d] }), "%.3f")
			}
			row[6] = spread(column(qs, func(q Quality) float64 { return 100 * q.Fullest }), "%.0f") + " %"
			row[7] = spread(column(qs, func(q Quality) float64 { return float64(q.Placed) }), "%.0f")
			b.WriteString("| " + strings.Join(row, " | ") + " |\n")
		}
	}
	return b.String()
}

// MatrixSummary counts, over the matrix, the cells that meet every goal, the (cell, seed) runs
// where berth placed fewer pods than the default scheduler, and berth's pods placed over the
// default's, as the mean over cells of the per-cell ratio of means and its range.
func MatrixSummary(cells []Cell) string {
	met, fewer, runs := 0, 0, 0
	ratios := make([]float64, 0, len(cells))
	for _, c := range cells {
		if len(c.misses()) == 0 {
			met++
		}
		var b, d float64
		for i := range c.Berth {
			runs++
			if c.Berth[i].Placed < c.Default[i].Placed {
				fewer++
			}
			b += float64(c.Berth[i].Placed)
			d += float64(c.Default[i].Placed)
		}
		if d > 0 {
			ratios = append(ratios, b/d)
		}
	}
	return fmt.Sprintf("cells meeting every goal: %d of %d; runs where berth placed fewer pods than the "+
		"default: %d of %d; pods placed berth/default per cell: %s\n", met, len(cells), fewer, runs,
		spread(ratios, "%.3f"))
}

// offlineBalance is the mean over seeds of OfflineBalanceCV's three CVs, "-" where some seed's
// placement failed (or was not measured).
func (c *Cell) offlineBalance() string {
	if len(c.OfflineCV) == 0 {
		return "-"
	}
	var sum [3]float64
	for _, v := range c.OfflineCV {
		if v[0] < 0 {
			return "-"
		}
		for d := range 3 {
			sum[d] += v[d]
		}
	}
	n := float64(len(c.OfflineCV))
	return fmt.Sprintf("%.3f / %.3f / %.3f", sum[0]/n, sum[1]/n, sum[2]/n)
}
