//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// nodeSize is what a node of the local cluster advertises during a test: its kubelet reserves
// the rest of the machine (systemReserved), and the node is annotated with its NIC's speed.
type nodeSize struct {
	cpuMilli  int64
	memBytes  int64
	bandwidth int64 // bit/s
}

// resizeNode makes node advertise size (allocatable CPU and memory, network bandwidth) with its
// real kubelet: it rewrites the kubelet's config with systemReserved, restarts the kubelet (the
// node's supervisor starts it again within a second) and waits for the new allocatable. The
// cleanup restores the config, the kubelet and the annotation.
func resizeNode(t *testing.T, f *framework.Framework, node string, size nodeSize) {
	t.Helper()
	n, err := f.Client.CoreV1().Nodes().Get(f.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	capCPU := n.Status.Capacity.Cpu().MilliValue()
	capMem := n.Status.Capacity.Memory().Value()
	evict := int64(100 << 20) // the local cluster's evictionHard memory.available
	resCPU, resMem := capCPU-size.cpuMilli, capMem-evict-size.memBytes
	if resCPU < 0 || resMem < 0 {
		t.Fatalf("node %s has %dm CPU and %d bytes: cannot advertise %dm / %d", node, capCPU, capMem,
			size.cpuMilli, size.memBytes)
	}
	cfg := os.Getenv("BERTH_STATE") + "/kubelet/config.yaml"
	kubelet := func(script string) {
		t.Helper()
		if out, err := framework.NodeExec(node, "sh", "-c", script+"; pkill -x kubelet"); err != nil {
			t.Fatalf("reconfiguring the kubelet of %s: %v %s", node, err, out)
		}
	}
	waitAllocatable := func(cpuMilli int64) {
		t.Helper()
		f.WaitFor(fmt.Sprintf("%s to advertise %dm CPU", node, cpuMilli), 2*time.Minute,
			func(ctx context.Context) (bool, error) {
				n, err := f.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
				return err == nil && n.Status.Allocatable.Cpu().MilliValue() == cpuMilli &&
					framework.NodeReady(n), nil
			})
	}
	t.Cleanup(func() {
		kubelet(fmt.Sprintf("[ -f %[1]s.e2e-orig ] && mv %[1]s.e2e-orig %[1]s", cfg))
		_, _ = f.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"berth.dev/network-bandwidth":null}}}`), metav1.PatchOptions{})
		waitAllocatable(capCPU)
	})
	kubelet(fmt.Sprintf("[ -f %[1]s.e2e-orig ] || cp %[1]s %[1]s.e2e-orig; "+
		"{ cat %[1]s.e2e-orig; echo 'systemReserved: {cpu: %[2]dm, memory: \"%[3]d\"}'; } > %[1]s",
		cfg, resCPU, resMem))
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"berth.dev/network-bandwidth":"%d"}}}`, size.bandwidth)
	if _, err := f.Client.CoreV1().Nodes().Patch(f.Context(), node, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAllocatable(size.cpuMilli)
}

// fill is each node's requests (and declared bandwidth) over its own allocatable, per dimension.
type fill map[string][3]float64 // node -> cpu, memory, network

func nodeFill(t *testing.T, f *framework.Framework, nodes []string, sizes map[string]nodeSize) fill {
	t.Helper()
	out := fill{}
	for _, node := range nodes {
		pods, err := f.Client.CoreV1().Pods("").List(f.Context(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			t.Fatal(err)
		}
		var cpu, mem, net int64
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil {
				continue
			}
			for _, c := range p.Spec.Containers {
				cpu += c.Resources.Requests.Cpu().MilliValue()
				mem += c.Resources.Requests.Memory().Value()
			}
			if bw, ok := p.Annotations["kubernetes.io/egress-bandwidth"]; ok {
				q := resource.MustParse(bw)
				net += q.Value()
			}
		}
		s := sizes[node]
		out[node] = [3]float64{float64(cpu) / float64(s.cpuMilli), float64(mem) / float64(s.memBytes),
			float64(net) / float64(s.bandwidth)}
	}
	return out
}

// spread is the CV of each dimension's fill over the nodes, and the fullest node's fill.
func (fl fill) spread(nodes []string) (cv [3]float64, fullest float64) {
	for d := 0; d < 3; d++ {
		v := map[string]float64{}
		for _, n := range nodes {
			v[n] = fl[n][d]
			fullest = max(fullest, fl[n][d])
		}
		cv[d] = coefficientOfVariation(v, nodes)
	}
	return cv, fullest
}

// TestMultiNodeSchedulerMixedSizes: three real kubelets advertising three sizes (1×, 2×, 3× in
// CPU, memory and NIC speed), a shuffled mix of CPU-, memory- and network-heavy pods placed one
// at a time to about 70 % fill, once by berth-scheduler and once by the default scheduler. berth
// keeps every node's network fill, as a share of its own capacity, far more even than the
// default (which does not see bandwidth), without making CPU or memory fill less even or any
// node fuller than the default does.
func TestMultiNodeSchedulerMixedSizes(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("scheduler")
	nodes := f.ReadyNodes(3)[:3]
	sizes := map[string]nodeSize{}
	for i, n := range nodes {
		k := int64(i + 1)
		sizes[n] = nodeSize{cpuMilli: 600 * k, memBytes: k * 4 << 30, bandwidth: k * 1_000_000_000}
		resizeNode(t, f, n, sizes[n])
	}
	results := map[string]fill{}
	for _, scheduler := range []string{"berth-scheduler", "default-scheduler"} {
		results[scheduler] = placeSized(t, f, scheduler, nodes, sizes)
	}
	names := []string{"cpu", "memory", "network"}
	cv := map[string][3]float64{}
	full := map[string]float64{}
	for s, fl := range results {
		cv[s], full[s] = fl.spread(nodes)
		var rows []string
		for _, n := range nodes {
			rows = append(rows, fmt.Sprintf("%s %.0f%%/%.0f%%/%.0f%%", n, 100*fl[n][0], 100*fl[n][1], 100*fl[n][2]))
		}
		t.Logf("%s: fill cpu/memory/network %s; CV cpu %.3f memory %.3f network %.3f; fullest %.0f%%",
			s, strings.Join(rows, ", "), cv[s][0], cv[s][1], cv[s][2], 100*full[s])
	}
	b, d := cv["berth-scheduler"], cv["default-scheduler"]
	if b[2] > 0.15 || b[2] > 0.5*d[2] {
		t.Errorf("network fill CV: berth %.3f, default %.3f; want berth <= 0.15 and <= half the default's", b[2], d[2])
	}
	for i := 0; i < 2; i++ {
		if b[i] > d[i]+0.05 {
			t.Errorf("%s fill CV: berth %.3f, default %.3f; want berth <= default + 0.05", names[i], b[i], d[i])
		}
	}
	if full["berth-scheduler"] > full["default-scheduler"]+0.05 {
		t.Errorf("fullest node: berth %.0f%%, default %.0f%%; want berth no fuller", 100*full["berth-scheduler"],
			100*full["default-scheduler"])
	}
}

// placeSized places the mix with scheduler, one pod at a time, and returns the fill it reached;
// the pods are deleted after.
func placeSized(t *testing.T, f *framework.Framework, scheduler string, nodes []string,
	sizes map[string]nodeSize) fill {
	t.Helper()
	type shape struct {
		kind      string
		cpu, mem  string
		bandwidth string
		n         int
	}
	// Pods small against the smallest node (one is at most 1/8 of its CPU, memory or NIC):
	// with 1/4-node pods, which node takes the last few decides the CV more than any policy.
	mix := []shape{
		{"cpu", "75m", "64Mi", "", 24},
		{"mem", "10m", "512Mi", "", 24},
		{"net", "5m", "32Mi", "100M", 40},
	}
	var pods []*corev1.Pod
	for _, s := range mix {
		for i := 0; i < s.n; i++ {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", scheduler[:5], s.kind, i),
					Labels: map[string]string{"sized": scheduler}, Annotations: map[string]string{}},
				Spec: corev1.PodSpec{
					SchedulerName:                 scheduler,
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers: []corev1.Container{{Name: "pause", Image: framework.Image("pause"),
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse(s.cpu), corev1.ResourceMemory: resource.MustParse(s.mem)}}}},
				},
			}
			if s.bandwidth != "" {
				p.Annotations["kubernetes.io/egress-bandwidth"] = s.bandwidth
			}
			pods = append(pods, p)
		}
	}
	// the same shuffled order for both schedulers
	rand.New(rand.NewSource(19)).Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	placeOneByOne(t, f, pods)
	fl := nodeFill(t, f, nodes, sizes)
	deletePods(t, f, "sized="+scheduler)
	return fl
}
