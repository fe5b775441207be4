package schedbench

import (
	"context"
	"fmt"
	"math"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// podEvent is what the harness learns about one pod: where it was bound, or that it is unschedulable.
type podEvent struct {
	name          string
	node          string
	unschedulable bool
	at            time.Time
}

// watchPods streams bind and unschedulable events of the pods in ns until ctx ends.
func watchPods(ctx context.Context, c kubernetes.Interface, ns string) (<-chan podEvent, error) {
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	ch := make(chan podEvent, 1<<16)
	send := func(obj any) {
		p, ok := obj.(*v1.Pod)
		if !ok {
			return
		}
		ev := podEvent{name: p.Name, node: p.Spec.NodeName, at: time.Now()}
		for _, cond := range p.Status.Conditions {
			if cond.Type == v1.PodScheduled && cond.Status == v1.ConditionFalse && cond.Reason == v1.PodReasonUnschedulable {
				ev.unschedulable = true
			}
		}
		if ev.node != "" || ev.unschedulable {
			select {
			case ch <- ev:
			case <-ctx.Done():
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    send,
		UpdateFunc: func(_, o any) { send(o) },
	}); err != nil {
		return nil, fmt.Errorf("failed to watch pods in %s: %w", ns, err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("pod informer for %s did not sync", ns)
	}
	return ch, nil
}

// Throughput creates pods pending for schedulerName in a fresh namespace ns while no scheduler
// runs, then starts the scheduler and returns pods bound per second between the first and the
// last bind. The pods are deleted before it returns.
func Throughput(ctx context.Context, c kubernetes.Interface, dir, configYAML, schedulerName, ns string,
	n int, timeout time.Duration) (float64, error) {
	if err := CreateNamespace(ctx, c, ns); err != nil {
		return 0, err
	}
	pods := make([]*v1.Pod, n)
	for i, k := range Sequence(n, 1) {
		pods[i] = NewPod(ns, fmt.Sprintf("p-%d", i), schedulerName, k, nil)
	}
	if err := CreatePods(ctx, c, pods); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	events, err := watchPods(wctx, c, ns)
	if err != nil {
		return 0, err
	}
	stop, err := StartScheduler(ctx, dir, configYAML)
	if err != nil {
		return 0, err
	}
	bound := map[string]bool{}
	var first, last time.Time
	for len(bound) < n {
		select {
		case ev := <-events:
			if ev.node == "" || bound[ev.name] {
				continue
			}
			bound[ev.name] = true
			if first.IsZero() {
				first = ev.at
			}
			last = ev.at
		case <-wctx.Done():
			stop()
			return 0, fmt.Errorf("only %d of %d pods bound by %s within %s", len(bound), n, schedulerName, timeout)
		}
	}
	stop()
	if err := DeletePods(ctx, c, ns); err != nil {
		return 0, err
	}
	return float64(n-1) / last.Sub(first).Seconds(), waitNoPods(ctx, c, ns)
}

func waitNoPods(ctx context.Context, c kubernetes.Interface, ns string) error {
	return wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return false, fmt.Errorf("listing pods in %s: %w", ns, err)
		}
		return len(l.Items) == 0, nil
	})
}

// Quality is the outcome of filling a node group with a workload.
type Quality struct {
	// CV is the coefficient of variation across nodes of each node's requested share of its own
	// CPU, memory and network capacity, taken when the group first reaches FillTarget in its
	// fullest dimension (requests summed over capacity summed).
	CV [3]float64
	// Fill is the group's fill (fullest dimension) at which CV was taken.
	Fill float64
	// Fullest is, at the same moment, the highest share of its own capacity any node has in any
	// dimension: the hot spot.
	Fullest float64
	// Placed counts pods bound before the first unschedulable one.
	Placed int
	// Final is the group's CPU, memory and network fill when the first pod failed.
	Final [3]float64
}

// FillTarget is the cluster fill at which CV is measured.
const FillTarget = 0.70

// FillGroup creates the pods of seq one at a time for schedulerName, pinned by nodeSelector
// to nodes carrying group=<group>, waits for each to be bound or unschedulable, and stops at the
// first unschedulable pod. A scheduler serving schedulerName must be running.
func FillGroup(ctx context.Context, c kubernetes.Interface, schedulerName, ns, group string,
	nodes []*v1.Node, seq []Kind, perPod time.Duration) (Quality, error) {
	var q Quality
	if err := CreateNamespace(ctx, c, ns); err != nil {
		return q, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := watchPods(wctx, c, ns)
	if err != nil {
		return q, err
	}
	idx := map[string]int{}
	for i, n := range nodes {
		idx[n.Name] = i
	}
	m := newFillMeter(nodes)
	for i, k := range seq {
		pod := NewPod(ns, fmt.Sprintf("q-%d", i), schedulerName, k, map[string]string{"group": group})
		if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return q, fmt.Errorf("failed to create pod %s: %w", pod.Name, err)
		}
		ev, err := waitFor(ctx, events, pod.Name, perPod)
		if err != nil {
			return q, err
		}
		if ev.unschedulable {
			q.Placed = i
			break
		}
		n, ok := idx[ev.node]
		if !ok {
			return q, fmt.Errorf("pod %s bound to %s outside group %s", pod.Name, ev.node, group)
		}
		m.place(&q, n, k)
		q.Placed = i + 1
	}
	m.finish(&q)
	return q, nil
}

// fillMeter follows what a group's nodes have requested as pods are placed, and measures the
// group when it first reaches FillTarget.
type fillMeter struct {
	used, capacity [][3]float64
	pods, maxPods  []int64
}

func newFillMeter(nodes []*v1.Node) *fillMeter {
	m := &fillMeter{used: make([][3]float64, len(nodes)), capacity: make([][3]float64, len(nodes)),
		pods: make([]int64, len(nodes)), maxPods: make([]int64, len(nodes))}
	for i, n := range nodes {
		a := n.Status.Allocatable
		m.capacity[i] = [3]float64{float64(a.Cpu().MilliValue()), float64(a.Memory().Value()),
			float64(a.Name(balance.ResourceBandwidth, resource.DecimalSI).Value())}
		m.maxPods[i] = a.Pods().Value()
	}
	return m
}

// fits is NodeResourcesFit's check for these pods: CPU, memory, bandwidth and the pod count
// within node n's allocatable.
func (m *fillMeter) fits(n int, k Kind) bool {
	u, c := m.used[n], m.capacity[n]
	return m.pods[n] < m.maxPods[n] && u[0]+float64(k.CPU.MilliValue()) <= c[0] &&
		u[1]+float64(k.Memory.Value()) <= c[1] && u[2]+float64(k.Bandwidth.Value()) <= c[2]
}

// place counts a pod of kind k on node n and takes q's measures if the group has just reached
// FillTarget.
func (m *fillMeter) place(q *Quality, n int, k Kind) {
	m.pods[n]++
	m.used[n][0] += float64(k.CPU.MilliValue())
	m.used[n][1] += float64(k.Memory.Value())
	m.used[n][2] += float64(k.Bandwidth.Value())
	if fill := groupFill(m.used, m.capacity); q.Fill == 0 && max(fill[0], fill[1], fill[2]) >= FillTarget {
		q.Fill, q.CV, q.Fullest = max(fill[0], fill[1], fill[2]), cv(m.used, m.capacity), fullest(m.used, m.capacity)
	}
}

// finish records the group's final fill, and the last state as q's measures if the group never
// reached FillTarget.
func (m *fillMeter) finish(q *Quality) {
	q.Final = groupFill(m.used, m.capacity)
	if q.Fill == 0 {
		q.Fill, q.CV, q.Fullest = max(q.Final[0], q.Final[1], q.Final[2]), cv(m.used, m.capacity),
			fullest(m.used, m.capacity)
	}
}

func waitFor(ctx context.Context, events <-chan podEvent, name string, timeout time.Duration) (podEvent, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case ev := <-events:
			if ev.name == name {
				return ev, nil
			}
		case <-t.C:
			return podEvent{}, fmt.Errorf("pod %s neither bound nor unschedulable within %s", name, timeout)
		case <-ctx.Done():
			return podEvent{}, ctx.Err()
		}
	}
}

// groupFill is, per dimension, the group's requests over its capacity.
func groupFill(used, capacity [][3]float64) [3]float64 {
	var out, sum [3]float64
	for i := range used {
		for d := range 3 {
			out[d] += used[i][d]
			sum[d] += capacity[i][d]
		}
	}
	for d := range 3 {
		out[d] /= sum[d]
	}
	return out
}

// cv returns, per dimension, stddev/mean across nodes of each node's used share of its capacity.
func cv(used, capacity [][3]float64) [3]float64 {
	var out [3]float64
	n := float64(len(used))
	for d := range 3 {
		var sum, sq float64
		for i := range used {
			f := used[i][d] / capacity[i][d]
			sum += f
			sq += f * f
		}
		mean := sum / n
		if mean == 0 {
			continue
		}
		out[d] = math.Sqrt(max(0, sq/n-mean*mean)) / mean
	}
	return out
}

// fullest is the highest used share of its own capacity of any node in any dimension.
func fullest(used, capacity [][3]float64) float64 {
	var out float64
	for i := range used {
		for d := range 3 {
			out = max(out, used[i][d]/capacity[i][d])
		}
	}
	return out
}
