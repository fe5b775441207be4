package balance

import (
	"context"
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/berth-dev/berth/internal/defaultprofile"
	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
)

// makeNode returns a node with cpu cores, memory GiB and, if bw is non-empty, a bandwidth annotation.
func makeNode(name string, cpu, memGi int64, bw string) *v1.Node {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}},
		Status: v1.NodeStatus{Allocatable: v1.ResourceList{
			v1.ResourceCPU:    *resource.NewQuantity(cpu, resource.DecimalSI),
			v1.ResourceMemory: *resource.NewQuantity(memGi<<30, resource.BinarySI),
			v1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
		}},
	}
	if bw != "" {
		n.Annotations[AnnotationBandwidth] = bw
	}
	return n
}

// makePod returns a pod requesting milliCPU, memory MiB and, if bw is non-empty, egress bandwidth.
func makePod(name string, milliCPU, memMi int64, bw string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   "default",
			UID:         types.UID(name),
			Annotations: map[string]string{},
		},
		Spec: v1.PodSpec{
			Containers: []v1.Container{
				{Name: "c", Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
					v1.ResourceCPU:    *resource.NewMilliQuantity(milliCPU, resource.DecimalSI),
					v1.ResourceMemory: *resource.NewQuantity(memMi<<20, resource.BinarySI),
				}}},
			},
		},
	}
	if bw != "" {
		p.Annotations[AnnotationEgressBandwidth] = bw
	}
	return p
}

// nodeInfo builds a NodeInfo holding pods, and records the pods' bandwidth in the plugin cache
// as the pod informer would.
func nodeInfo(pl *Balance, node *v1.Node, pods ...*v1.Pod) fwk.NodeInfo {
	ni := framework.NewNodeInfo()
	ni.SetNode(node)
	for _, p := range pods {
		p = p.DeepCopy()
		p.Spec.NodeName = node.Name
		ni.AddPod(p)
		pl.cache.podHandler().OnAdd(p, false)
	}
	return ni
}

func newTestPlugin(t testing.TB) *Balance {
	t.Helper()
	p, err := New(context.Background(), nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p.(*Balance)
}

// scoreAll runs PreScore, Score and NormalizeScore like the framework does and returns the
// normalized scores by node name.
func scoreAll(t testing.TB, pl *Balance, pod *v1.Pod, nodes []fwk.NodeInfo) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(ctx, cs, pod, nodes); !st.IsSuccess() && !st.IsSkip() {
		t.Fatalf("PreFilter: %v", st)
	}
	if st := pl.PreScore(ctx, cs, pod, nodes); !st.IsSuccess() {
		t.Fatalf("PreScore: %v", st)
	}
	list := make(fwk.NodeScoreList, len(nodes))
	for i, ni := range nodes {
		s, st := pl.Score(ctx, cs, pod, ni)
		if !st.IsSuccess() {
			t.Fatalf("Score: %v", st)
		}
		list[i] = fwk.NodeScore{Name: ni.Node().Name, Score: s}
	}
	if st := pl.NormalizeScore(ctx, cs, pod, list); !st.IsSuccess() {
		t.Fatalf("NormalizeScore: %v", st)
	}
	out := map[string]int64{}
	for _, s := range list {
		if s.Score < fwk.MinNodeScore || s.Score > fwk.MaxNodeScore {
			t.Fatalf("score %d of %s out of range", s.Score, s.Name)
		}
		out[s.Name] = s.Score
	}
	return out
}

func best(scores map[string]int64) string {
	bestName, bestScore := "", int64(-1)
	for n, s := range scores {
		if s > bestScore || (s == bestScore && n < bestName) {
			bestName, bestScore = n, s
		}
	}
	return bestName
}

func podsN(prefix string, n int, milliCPU, memMi int64, bw string) []*v1.Pod {
	out := make([]*v1.Pod, n)
	for i := range out {
		out[i] = makePod(fmt.Sprintf("%s-%d", prefix, i), milliCPU, memMi, bw)
	}
	return out
}

// defaultScores scores the nodes with the default profile's resource score plugins
// (defaultprofile.ResourceScorers, both weight 1): what the scheduler decides without
// BerthBalance. The other default score plugins are neutral for these pods and nodes.
func defaultScores(t testing.TB, pod *v1.Pod, nodes []fwk.NodeInfo) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	fit, ba, err := defaultprofile.ResourceScorers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, pl := range []fwk.ScorePlugin{fit, ba} {
		cs := framework.NewCycleState()
		for _, ni := range nodes {
			s, st := pl.Score(ctx, cs, pod, ni)
			if !st.IsSuccess() {
				t.Fatalf("%s Score: %v", pl.Name(), st)
			}
			out[ni.Node().Name] += s
		}
	}
	return out
}

// defaultArgs returns the plugin's defaulted args, for a test to change one field.
func defaultArgs(t testing.TB) *config.BerthBalanceArgs {
	t.Helper()
	args, err := getArgs(nil)
	if err != nil {
		t.Fatalf("default args: %v", err)
	}
	return args
}
