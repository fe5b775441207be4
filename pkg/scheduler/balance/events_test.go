package balance

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
)

func TestEventsToRegister(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	events, err := pl.EventsToRegister(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var pod, node fwk.ActionType
	for _, e := range events {
		if e.QueueingHintFn == nil {
			t.Errorf("event %v has no QueueingHint", e.Event)
		}
		switch e.Event.Resource {
		case fwk.Pod:
			pod |= e.Event.ActionType
		case fwk.Node:
			node |= e.Event.ActionType
		}
	}
	if pod&fwk.Delete == 0 || pod&fwk.Update == 0 {
		t.Errorf("pod events %v, want Delete and Update", pod)
	}
	for _, a := range []fwk.ActionType{fwk.Add, fwk.UpdateNodeAllocatable, fwk.UpdateNodeLabel,
		fwk.UpdateNodeAnnotation} {
		if node&a == 0 {
			t.Errorf("node events %v lack %v", node, a)
		}
	}
}

func TestQueueingHints(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	pending := makePod("pending", 100, 100, "3G")
	bound := func(name, bw string) *v1.Pod {
		p := makePod(name, 100, 100, bw)
		p.Spec.NodeName = "n"
		return p
	}
	done := bound("done", "2G")
	done.Status.Phase = v1.PodSucceeded
	smaller := pending.DeepCopy()
	smaller.Annotations[AnnotationEgressBandwidth] = "1G"
	nominated := makePod("nominated", 100, 100, "2G")
	nominated.Status.NominatedNodeName = "n"
	heavy := bound("heavy", "")
	heavy.Annotations[AnnotationProfile] = "network"

	podTests := []struct {
		name     string
		old, new *v1.Pod
		want     fwk.QueueingHint
	}{
		{"bound pod with bandwidth deleted", bound("a", "2G"), nil, fwk.Queue},
		{"bound network-profile pod deleted", heavy, nil, fwk.Queue},
		{"nominated pod with bandwidth deleted", nominated, nil, fwk.Queue},
		{"bound pod without bandwidth deleted", bound("a", ""), nil, fwk.QueueSkip},
		{"unscheduled pod deleted", makePod("u", 100, 100, "2G"), nil, fwk.QueueSkip},
		{"bound pod finished", bound("done", "2G"), done, fwk.Queue},
		{"bound pod asks for less", bound("a", "2G"), bound("a", "1G"), fwk.Queue},
		{"bound pod asks for more", bound("a", "1G"), bound("a", "2G"), fwk.QueueSkip},
		{"bound pod relabelled", bound("a", "1G"), bound("a", "1G"), fwk.QueueSkip},
		{"the pending pod asks for less", pending, smaller, fwk.Queue},
		{"the pending pod unchanged in bandwidth", pending, pending.DeepCopy(), fwk.QueueSkip},
	}
	for _, tc := range podTests {
		var newObj any
		if tc.new != nil {
			newObj = tc.new
		}
		got, err := pl.isSchedulableAfterPodEvent(klog.Background(), pending, tc.old, newObj)
		if err != nil || got != tc.want {
			t.Errorf("%s: hint %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}

	withExt := func(bw string) *v1.Node {
		n := makeNode("n", 8, 32, "")
		n.Status.Allocatable[ResourceBandwidth] = resource.MustParse(bw)
		return n
	}
	nodeTests := []struct {
		name     string
		old, new *v1.Node
		want     fwk.QueueingHint
	}{
		{"new node big enough", nil, makeNode("n", 8, 32, "10G"), fwk.Queue},
		{"new node with the default capacity", nil, makeNode("n", 8, 32, ""), fwk.Queue},
		{"new node too small", nil, makeNode("n", 8, 32, "1G"), fwk.QueueSkip},
		{"annotation raised", makeNode("n", 8, 32, "1G"), makeNode("n", 8, 32, "25G"), fwk.Queue},
		{"annotation lowered", makeNode("n", 8, 32, "25G"), makeNode("n", 8, 32, "1G"), fwk.QueueSkip},
		{"allocatable raised", withExt("5G"), withExt("40G"), fwk.Queue},
		{"unrelated update", makeNode("n", 8, 32, "10G"), makeNode("n", 8, 32, "10G"), fwk.QueueSkip},
	}
	for _, tc := range nodeTests {
		var oldObj any
		if tc.old != nil {
			oldObj = tc.old
		}
		got, err := pl.isSchedulableAfterNodeEvent(klog.Background(), pending, oldObj, tc.new)
		if err != nil || got != tc.want {
			t.Errorf("%s: hint %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

// TestNominatedAndVictimPods: the framework's AddPod (a nominated pod) and RemovePod (a
// preemption victim) change what the Filter sees on that node's cloned CycleState only.
func TestNominatedAndVictimPods(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	ctx := context.Background()
	victims := podsN("v", 4, 100, 100, "2G")
	ni := nodeInfo(pl, makeNode("n", 8, 32, "10G"), victims...) // 8G of 10G used
	pod := makePod("p", 100, 100, "1G")
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(ctx, cs, pod, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter = %v", st)
	}
	if st := pl.Filter(ctx, cs, pod, ni); !st.IsSuccess() {
		t.Fatalf("Filter without nominated pods = %v, want success", st)
	}
	// As the framework does it: the nominated pod goes into clones of the NodeInfo and the
	// CycleState, then AddPod is told.
	nominated, niNominated := cs.Clone(), ni.Snapshot()
	pi, _ := framework.NewPodInfo(makePod("nominated", 100, 100, "2G"))
	niNominated.AddPodInfo(pi)
	if st := pl.PreFilterExtensions().AddPod(ctx, nominated, pod, pi, niNominated); !st.IsSuccess() {
		t.Fatal(st)
	}
	if st := pl.Filter(ctx, nominated, pod, niNominated); st.Code() != fwk.Unschedulable {
		t.Fatalf("Filter with a 2G nominated pod = %v, want Unschedulable", st)
	}
	if st := pl.Filter(ctx, cs, pod, ni); !st.IsSuccess() {
		t.Fatalf("the nominated pod leaked into the original CycleState: %v", st)
	}

	big := makePod("big", 100, 100, "3G")
	cs = framework.NewCycleState()
	_, _ = pl.PreFilter(ctx, cs, big, nil)
	if st := pl.Filter(ctx, cs, big, ni); st.Code() != fwk.Unschedulable {
		t.Fatalf("Filter of 3G on 8G/10G = %v, want Unschedulable", st)
	}
	// Preemption removes the victim from a clone of the NodeInfo, then tells RemovePod.
	victim, _ := framework.NewPodInfo(victims[0])
	niVictim := ni.Snapshot()
	if err := niVictim.RemovePod(klog.Background(), niVictim.GetPods()[0].GetPod()); err != nil {
		t.Fatal(err)
	}
	if st := pl.PreFilterExtensions().RemovePod(ctx, cs, big, victim, niVictim); !st.IsSuccess() {
		t.Fatal(st)
	}
	if st := pl.Filter(ctx, cs, big, niVictim); !st.IsSuccess() {
		t.Fatalf("Filter of 3G after removing a 2G victim = %v, want success (preemption frees bandwidth)", st)
	}
}

// TestFilterTrustsTheSnapshotOverALaggingCache: the queueing hint requeues a pod when a pod
// holding bandwidth is deleted, from the scheduler's own event handler; the plugin's cache
// hears of the deletion from its own handler, maybe later. The Filter must not reject the pod
// for bandwidth the scheduler's snapshot already shows free, or it waits for an unrelated event.
func TestFilterTrustsTheSnapshotOverALaggingCache(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	ctx := context.Background()
	node := makeNode("n", 8, 32, "10G")
	holders := podsN("h", 4, 100, 100, "2G")
	nodeInfo(pl, node, holders...) // the cache counts 8G of 10G
	pod := makePod("p", 100, 100, "3G")
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(ctx, cs, pod, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter = %v", st)
	}
	// The snapshot no longer has the first holder; the cache has not heard yet.
	after := framework.NewNodeInfo()
	after.SetNode(node)
	for _, h := range holders[1:] {
		h = h.DeepCopy()
		h.Spec.NodeName = node.Name
		after.AddPod(h)
	}
	if st := pl.Filter(ctx, cs, pod, after); !st.IsSuccess() {
		t.Fatalf("Filter of 3G with 6G of 10G used in the snapshot = %v, want success", st)
	}
	// And with every holder still there it is rejected.
	full := nodeInfo(pl, node, holders...)
	if st := pl.Filter(ctx, cs, pod, full); st.Code() != fwk.Unschedulable {
		t.Fatalf("Filter of 3G on 8G/10G = %v, want Unschedulable", st)
	}
}
