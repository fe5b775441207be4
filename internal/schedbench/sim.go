package schedbench

import (
	"context"
	"fmt"
	"math/rand/v2"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/berth-dev/berth/internal/defaultprofile"
	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// The offline simulator fills a node group the way the matrix's scheduler does — the same
// in-tree score plugins and BerthBalance, the same weights, ties broken at random — but on
// in-memory NodeInfos, without an API server: a whole matrix takes seconds instead of
// twenty minutes. It stands in for the scheduler only in the placement decision (no queue, no
// binding, no informers) and serves to explore the score; the figures that count come from
// RunMatrix against the real kube-scheduler.

// weightedScorer is one score plugin of a profile with its weight.
type weightedScorer struct {
	plugin fwk.ScorePlugin
	weight int64
}

// simProfile builds the score plugins of the named profile of Config: default-scheduler's
// resource plugins (defaultprofile.ResourceScorers, weight 1 each; the other default score
// plugins are neutral for these pods), or berth-scheduler's (NodeResourcesFit weight 1,
// BerthBalance weight 5 with args; nil args are the defaults).
func simProfile(ctx context.Context, name string, args *config.BerthBalanceArgs) ([]weightedScorer, error) {
	fit, balanced, err := defaultprofile.ResourceScorers(ctx)
	if err != nil {
		return nil, err
	}
	out := []weightedScorer{{fit, 1}}
	switch name {
	case DefaultSchedulerName:
		return append(out, weightedScorer{balanced, 1}), nil
	case BerthSchedulerName:
		var obj runtime.Object // a nil *BerthBalanceArgs in it would not read as "no args"
		if args != nil {
			obj = args
		}
		bb, err := balance.New(ctx, obj, nil)
		if err != nil {
			return nil, fmt.Errorf("failed to build %s: %w", balance.Name, err)
		}
		return append(out, weightedScorer{bb.(fwk.ScorePlugin), 5}), nil
	}
	return nil, fmt.Errorf("unknown profile %q", name)
}

// SimulateFill places the pods of seq one at a time on nodes with the score plugins of profile
// (DefaultSchedulerName or BerthSchedulerName, whose BerthBalance gets args; nil means the
// defaults) until the first pod that fits nowhere, and measures the group as FillGroup does.
// Ties between the best nodes are broken with a generator seeded by seed, as the scheduler
// breaks them at random.
func SimulateFill(ctx context.Context, profile string, args *config.BerthBalanceArgs, nodes []*v1.Node,
	seq []Kind, seed uint64) (Quality, error) {
	var q Quality
	scorers, err := simProfile(ctx, profile, args)
	if err != nil {
		return q, err
	}
	rng := rand.New(rand.NewPCG(seed, ^seed))
	infos := make([]fwk.NodeInfo, len(nodes))
	for i, n := range nodes {
		ni := framework.NewNodeInfo()
		ni.SetNode(n)
		infos[i] = ni
	}
	m := newFillMeter(nodes)
	total := make([]int64, len(nodes))
	for i, k := range seq {
		pod := NewPod("sim", fmt.Sprintf("q-%d", i), profile, k, nil)
		pod.UID = types.UID(pod.Name)
		var feasible []fwk.NodeInfo
		var index []int
		for n, ni := range infos {
			if m.fits(n, k) {
				feasible, index = append(feasible, ni), append(index, n)
			}
		}
		if len(feasible) == 0 {
			q.Placed = i
			break
		}
		if err := scoreNodes(ctx, scorers, pod, feasible, total[:len(feasible)]); err != nil {
			return q, err
		}
		chosen, ties := 0, 0
		for j := range feasible {
			switch {
			case total[j] > total[chosen]:
				chosen, ties = j, 1
			case total[j] == total[chosen]:
				if ties++; rng.IntN(ties) == 0 {
					chosen = j
				}
			}
		}
		pod.Spec.NodeName = feasible[chosen].Node().Name
		feasible[chosen].(*framework.NodeInfo).AddPod(pod)
		m.place(&q, index[chosen], k)
		q.Placed = i + 1
	}
	m.finish(&q)
	return q, nil
}

// scoreNodes runs PreScore, Score and NormalizeScore of every scorer as the framework does and
// writes the weighted sum per node into total.
func scoreNodes(ctx context.Context, scorers []weightedScorer, pod *v1.Pod, nodes []fwk.NodeInfo,
	total []int64) error {
	clear(total)
	list := make(fwk.NodeScoreList, len(nodes))
	for _, s := range scorers {
		cs := framework.NewCycleState()
		if pf, ok := s.plugin.(fwk.PreFilterPlugin); ok {
			if _, st := pf.PreFilter(ctx, cs, pod, nodes); !st.IsSuccess() && !st.IsSkip() {
				return fmt.Errorf("%s PreFilter: %w", s.plugin.Name(), st.AsError())
			}
		}
		if ps, ok := s.plugin.(fwk.PreScorePlugin); ok {
			st := ps.PreScore(ctx, cs, pod, nodes)
			if st.IsSkip() {
				continue
			}
			if !st.IsSuccess() {
				return fmt.Errorf("%s PreScore: %w", s.plugin.Name(), st.AsError())
			}
		}
		for i, ni := range nodes {
			v, st := s.plugin.Score(ctx, cs, pod, ni)
			if !st.IsSuccess() {
				return fmt.Errorf("%s Score: %w", s.plugin.Name(), st.AsError())
			}
			list[i] = fwk.NodeScore{Name: ni.Node().Name, Score: v}
		}
		if ext := s.plugin.ScoreExtensions(); ext != nil {
			if st := ext.NormalizeScore(ctx, cs, pod, list); !st.IsSuccess() {
				return fmt.Errorf("%s NormalizeScore: %w", s.plugin.Name(), st.AsError())
			}
		}
		for i := range list {
			total[i] += s.weight * list[i].Score
		}
	}
	return nil
}

// SimulateMatrix is RunMatrix on the offline simulator: for every shape, workload and seed,
// the same sequence on two groups of mp.Nodes nodes, one per profile; args configure
// BerthBalance (nil: the defaults).
func SimulateMatrix(ctx context.Context, mp MatrixParams, args *config.BerthBalanceArgs) ([]Cell, error) {
	var cells []Cell
	for _, sh := range mp.Shapes {
		for _, w := range mp.Workloads {
			cell := newCell(sh, w, mp.Seeds)
			for i := range mp.Seeds {
				seed := uint64(i + 1)
				nodes := ShapedNodes("sim", sh, mp.Nodes, nil)
				seq := cellSequence(w, nodes, seed)
				d, err := SimulateFill(ctx, DefaultSchedulerName, nil, nodes, seq, seed)
				if err != nil {
					return nil, err
				}
				b, err := SimulateFill(ctx, BerthSchedulerName, args, nodes, seq, seed)
				if err != nil {
					return nil, err
				}
				cell.record(i, measureSeed(d, b, seq, nodes))
			}
			cells = append(cells, cell)
		}
	}
	return cells, nil
}
