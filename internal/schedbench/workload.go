package schedbench

import (
	"context"
	"fmt"
	"math/rand/v2"

	"golang.org/x/sync/errgroup"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// Node shape of every simulated node: 16 cores, 64 GiB, 10 Gbit/s, the bandwidth declared as the
// berth.dev/network-bandwidth extended resource so that the default scheduler's NodeResourcesFit
// enforces it too and both schedulers face the same hard limits.
var (
	NodeCPU       = resource.MustParse("16")
	NodeMemory    = resource.MustParse("64Gi")
	NodeBandwidth = resource.MustParse("10G")
)

// Kind is one pod shape of the mixed workload.
type Kind struct {
	Name      string
	CPU       resource.Quantity
	Memory    resource.Quantity
	Bandwidth resource.Quantity
}

// Mix is the documented mixed workload, drawn uniformly: per draw of one of each the demand is
// 2.5 cores (15.6 % of a node), 10 GiB (15.6 %) and 1.5 Gbit/s (15 %), so a perfect packing fills
// all three dimensions together, with about 19 pods per node.
var Mix = []Kind{
	{"cpu-heavy", resource.MustParse("2"), resource.MustParse("2Gi"), resource.MustParse("100M")},
	{"memory-heavy", resource.MustParse("250m"), resource.MustParse("7Gi"), resource.MustParse("100M")},
	{"network-heavy", resource.MustParse("250m"), resource.MustParse("1Gi"), resource.MustParse("1300M")},
}

// Size is one node size of a Shape.
type Size struct {
	CPU, Memory, Bandwidth resource.Quantity
}

// Shape is a cluster's mix of node sizes; a group of n nodes takes the sizes in turn.
type Shape struct {
	Name  string
	Sizes []Size
}

func size(cpu, mem, bw string) Size {
	return Size{resource.MustParse(cpu), resource.MustParse(mem), resource.MustParse(bw)}
}

// Shapes are the node shapes of the quality matrix: identical nodes; two sizes, the second
// twice the first in CPU, memory and bandwidth; three sizes 1x/2x/4x in CPU and memory whose NICs
// do not follow (10G, 25G, 40G), as in clusters grown over hardware generations.
var Shapes = []Shape{
	{"identical", []Size{size("16", "64Gi", "10G")}},
	{"1x/2x", []Size{size("16", "64Gi", "10G"), size("32", "128Gi", "20G")}},
	{"1x/2x/4x", []Size{size("16", "64Gi", "10G"), size("32", "128Gi", "25G"), size("64", "256Gi", "40G")}},
}

// Workload is a pod mix of the quality matrix: kinds drawn with weights, and a share of pods
// whose bandwidth is dropped (pods that declare none).
type Workload struct {
	Name        string
	Kinds       []Kind
	Weights     []int
	NoBandwidth float64
}

// Large is the very large pod of the "few large pods" mix: half a 16-core node.
var Large = Kind{"large", resource.MustParse("8"), resource.MustParse("32Gi"), resource.MustParse("4G")}

// Workloads are the pod mixes of the quality matrix.
var Workloads = []Workload{
	{"documented mix", Mix, []int{1, 1, 1}, 0},
	{"network-heavy 2/3", Mix, []int{1, 1, 4}, 0},
	{"30 % no bandwidth", Mix, []int{1, 1, 1}, 0.3},
	{"3 % large pods", append(append([]Kind{}, Mix...), Large), []int{32, 32, 32, 3}, 0},
}

// Sequence draws n pods of the workload with a fixed seed, so both schedulers see the same pods.
func (w Workload) Sequence(n int, seed uint64) []Kind {
	r := rand.New(rand.NewPCG(seed, seed))
	total := 0
	for _, wt := range w.Weights {
		total += wt
	}
	out := make([]Kind, n)
	for i := range out {
		x := r.IntN(total)
		k := 0
		for ; x >= w.Weights[k]; k++ {
			x -= w.Weights[k]
		}
		out[i] = w.Kinds[k]
		if w.NoBandwidth > 0 && r.Float64() < w.NoBandwidth {
			out[i].Name += "-nobw"
			out[i].Bandwidth = resource.Quantity{}
		}
	}
	return out
}

// NewNode returns a simulated node of the default size with the given labels.
func NewNode(name string, labels map[string]string) *v1.Node {
	return NewNodeOfSize(name, Size{NodeCPU, NodeMemory, NodeBandwidth}, labels)
}

// NewNodeOfSize returns a simulated node of size sz with the given labels.
func NewNodeOfSize(name string, sz Size, labels map[string]string) *v1.Node {
	rl := v1.ResourceList{
		v1.ResourceCPU:            sz.CPU,
		v1.ResourceMemory:         sz.Memory,
		v1.ResourcePods:           resource.MustParse("110"),
		balance.ResourceBandwidth: sz.Bandwidth,
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: v1.NodeStatus{
			Capacity: rl, Allocatable: rl,
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}},
		},
	}
}

// NewPod returns a pod of kind k for schedulerName, optionally pinned to nodes with selector.
func NewPod(ns, name, schedulerName string, k Kind, selector map[string]string) *v1.Pod {
	requests := v1.ResourceList{v1.ResourceCPU: k.CPU, v1.ResourceMemory: k.Memory}
	var limits v1.ResourceList
	if !k.Bandwidth.IsZero() {
		requests[balance.ResourceBandwidth] = k.Bandwidth
		limits = v1.ResourceList{balance.ResourceBandwidth: k.Bandwidth}
	}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"kind": k.Name}},
		Spec: v1.PodSpec{
			SchedulerName: schedulerName,
			NodeSelector:  selector,
			Containers: []v1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10", Resources: v1.ResourceRequirements{
				Requests: requests, Limits: limits,
			}}},
		},
	}
}

// Sequence draws n kinds uniformly from Mix with a fixed seed (the throughput run's pods).
func Sequence(n int, seed uint64) []Kind {
	r := rand.New(rand.NewPCG(seed, seed))
	out := make([]Kind, n)
	for i := range out {
		out[i] = Mix[r.IntN(len(Mix))]
	}
	return out
}

// CreateNodes creates n untainted, ready nodes of the default size named prefix-i with labels,
// 16 at a time.
func CreateNodes(ctx context.Context, c kubernetes.Interface, prefix string, n int, labels map[string]string) error {
	_, err := CreateShapedNodes(ctx, c, prefix, Shape{Sizes: []Size{{NodeCPU, NodeMemory, NodeBandwidth}}}, n, labels)
	return err
}

// ShapedNodes returns n nodes named prefix-i with labels, node i of size shape.Sizes[i mod len].
func ShapedNodes(prefix string, shape Shape, n int, labels map[string]string) []*v1.Node {
	nodes := make([]*v1.Node, n)
	for i := range nodes {
		nodes[i] = NewNodeOfSize(fmt.Sprintf("%s-%d", prefix, i), shape.Sizes[i%len(shape.Sizes)], labels)
	}
	return nodes
}

// CreateShapedNodes creates the ShapedNodes as untainted, ready nodes, 16 at a time, and returns
// them.
func CreateShapedNodes(ctx context.Context, c kubernetes.Interface, prefix string, shape Shape, n int,
	labels map[string]string) ([]*v1.Node, error) {
	nodes := ShapedNodes(prefix, shape, n, labels)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, node := range nodes {
		g.Go(func() error {
			created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("failed to create node %s: %w", node.Name, err)
			}
			// The TaintNodesByCondition admission plugin adds the not-ready taint on create, and
			// there is no kubelet to clear it.
			created.Spec.Taints = nil
			if _, err := c.CoreV1().Nodes().Update(ctx, created, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("failed to untaint node %s: %w", node.Name, err)
			}
			return nil
		})
	}
	return nodes, g.Wait()
}

// CreatePods creates pods, 16 at a time.
func CreatePods(ctx context.Context, c kubernetes.Interface, pods []*v1.Pod) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, p := range pods {
		g.Go(func() error {
			if _, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("failed to create pod %s/%s: %w", p.Namespace, p.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// CreateNamespace creates a namespace.
func CreateNamespace(ctx context.Context, c kubernetes.Interface, name string) error {
	_, err := c.CoreV1().Namespaces().Create(ctx,
		&v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to create namespace %s: %w", name, err)
	}
	return nil
}

// DeletePods removes every pod of ns (grace period 0: there is no kubelet to wait for), one
// request per pod, 16 at a time: a DeleteCollection of 10,000 pods outlives the apiserver's
// request timeout.
func DeletePods(ctx context.Context, c kubernetes.Interface, ns string) error {
	l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return fmt.Errorf("failed to list the pods of %s: %w", ns, err)
	}
	zero := int64(0)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, p := range l.Items {
		g.Go(func() error {
			err := c.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("failed to delete pod %s/%s: %w", ns, p.Name, err)
			}
			return nil
		})
	}
	return g.Wait()
}
