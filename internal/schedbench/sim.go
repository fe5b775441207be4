package schedbench

import (
	"context"
	"fmt"
	"math/rand/v2"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"

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
// resource plugins (NodeResourcesFit LeastAllocated and NodeResourcesBalancedAllocation over
// CPU and memory, weight 1 each; the other default score plugins are neutral for these pods),
// or berth-scheduler's (NodeResourcesFit weight 1, BerthBalance weight 5 with args; nil args are
// the defaults).
func simProfile(ctx context.Context, name string, args *config.BerthBalanceArgs) ([]weightedScorer, error) {
	res := []schedconfig.ResourceSpec{{Name: "cpu", Weight: 1}, {Name: "memory", Weight: 1}}
	fit, err := noderesources.NewFit(ctx, &schedconfig.NodeResourcesFitArgs{
		ScoringStrategy: &schedconfig.ScoringStrategy{Type: schedconfig.LeastAllocated, Resources: res},
	}, nil, feature.Features{})
	if err != nil {
		return nil, fmt.Errorf("failed to build NodeResourcesFit: %w", err)
	}
	out := []weightedScorer{{fit.(fwk.ScorePlugin), 1}}
	switch name {
	case DefaultSchedulerName:
		ba, err := noderesources.NewBalancedAllocation(ctx,
			&schedconfig.NodeResourcesBalancedAllocationArgs{Resources: res}, nil, feature.Features{})
		if err != nil {
			return nil, fmt.Errorf("failed to build NodeResourcesBalancedAllocation: %w", err)
		}
		return append(out, weightedScorer{ba.(fwk.ScorePlugin), 1}), nil
	case BerthSchedulerName:
		var obj runtime.Object
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
			if len(ni.GetPods()) < 110 && m.fits(n, k) {
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
			cell := Cell{Shape: sh.Name, Workload: w.Name}
			for seed := range uint64(mp.Seeds) {
				nodes := make([]*v1.Node, mp.Nodes)
				units := 0.0
				for i := range nodes {
					nodes[i] = NewNodeOfSize(fmt.Sprintf("sim-%d", i), sh.Sizes[i%len(sh.Sizes)], nil)
					units += float64(nodes[i].Status.Allocatable.Cpu().MilliValue()) / float64(NodeCPU.MilliValue())
				}
				seq := w.Sequence(int(40*units), seed+1)
				d, err := SimulateFill(ctx, DefaultSchedulerName, nil, nodes, seq, seed+1)
				if err != nil {
					return nil, err
				}
				b, err := SimulateFill(ctx, BerthSchedulerName, args, nodes, seq, seed+1)
				if err != nil {
					return nil, err
				}
				cell.Default, cell.Berth = append(cell.Default, d), append(cell.Berth, b)
				cell.Bound = append(cell.Bound, CapacityBoundOf(seq, nodes))
				cell.OfflineNetCV = append(cell.OfflineNetCV, offlineNetCV(seq, nodes))
			}
			cells = append(cells, cell)
		}
	}
	return cells, nil
}
