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

// CoarseMix is the first workload measured (pods twice as large, about 10 per node); kept so
// its row in docs/scheduler.md can be reproduced by swapping it in.
var CoarseMix = []Kind{
	{"cpu-heavy", resource.MustParse("4"), resource.MustParse("4Gi"), resource.MustParse("200M")},
	{"memory-heavy", resource.MustParse("500m"), resource.MustParse("14Gi"), resource.MustParse("200M")},
	{"network-heavy", resource.MustParse("500m"), resource.MustParse("2Gi"), resource.MustParse("2600M")},
}

// NewNode returns a simulated node with the given labels.
func NewNode(name string, labels map[string]string) *v1.Node {
	rl := v1.ResourceList{
		v1.ResourceCPU:            NodeCPU,
		v1.ResourceMemory:         NodeMemory,
		v1.ResourcePods:           resource.MustParse("110"),
		balance.ResourceBandwidth: NodeBandwidth,
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
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"kind": k.Name}},
		Spec: v1.PodSpec{
			SchedulerName: schedulerName,
			NodeSelector:  selector,
			Containers: []v1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10", Resources: v1.ResourceRequirements{
				Requests: v1.ResourceList{v1.ResourceCPU: k.CPU, v1.ResourceMemory: k.Memory, balance.ResourceBandwidth: k.Bandwidth},
				Limits:   v1.ResourceList{balance.ResourceBandwidth: k.Bandwidth},
			}}},
		},
	}
}

// Sequence draws n kinds from Mix with a fixed seed, so both schedulers see the same workload.
func Sequence(n int, seed uint64) []Kind {
	r := rand.New(rand.NewPCG(seed, seed))
	out := make([]Kind, n)
	for i := range out {
		out[i] = Mix[r.IntN(len(Mix))]
	}
	return out
}

// CreateNodes creates n untainted, ready nodes named prefix-i with labels, 16 at a time.
func CreateNodes(ctx context.Context, c kubernetes.Interface, prefix string, n int, labels map[string]string) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			node := NewNode(fmt.Sprintf("%s-%d", prefix, i), labels)
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
	return g.Wait()
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
	_, err := c.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
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
