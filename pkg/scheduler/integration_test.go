//go:build integration

package scheduler_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/internal/schedbench"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// TestSchedulerPlacesByProfile runs the berth scheduler (the real kube-scheduler app with the
// BerthBalance plugin) against a real kube-apiserver with Node objects, and checks where pods land.
// Each case is also run through the default scheduler's profile on a copy of its nodes, which must
// place the pod on the other node: a case the default scheduler gets right would pass without
// BerthBalance and so would test nothing of it.
func TestSchedulerPlacesByProfile(t *testing.T) {
	ctx := t.Context()
	c := startScheduler(t)
	type pod struct {
		n            int
		cpu, mem, bw string
	}
	tests := []struct {
		name         string
		cpu, mem, bw string
		busy         [2][]pod // the pods already running on each of the two nodes
		want         int      // the node the pod should go to
	}{
		// Both nodes carry the same total demand in different shapes: one has a busy NIC, the
		// other busy CPU and memory. The default scheduler sees only CPU and memory and picks the
		// NIC-busy node.
		{"network-heavy", "250m", "256Mi", "2G", [2][]pod{{{4, "250m", "512Mi", "1500M"}},
			{{3, "3", "1Gi", "50M"}, {2, "250m", "16Gi", ""}}}, 1},
		// One node has idle cores but busy memory, the other half-busy cores and idle memory. The
		// default scheduler weighs memory as much as CPU for a pod that barely uses memory.
		{
			"cpu-heavy",
			"4",
			"1Gi",
			"",
			[2][]pod{{{4, "250m", "13Gi", ""}}, {{3, "2400m", "1Gi", ""}}},
			0,
		},
	}
	for _, sched := range []string{schedbench.BerthSchedulerName, schedbench.DefaultSchedulerName} {
		for _, tc := range tests {
			group := sched + "-" + tc.name
			var nodes [2]string
			for i, pods := range tc.busy {
				nodes[i] = createNode(t, c, fmt.Sprintf("%s-%d", group, i), group)
				for j, p := range pods {
					for k := range p.n {
						createPodFor(
							t,
							c,
							sched,
							fmt.Sprintf("%s-%d-%d-%d", group, i, j, k),
							nodes[i],
							"",
							p.cpu,
							p.mem,
							p.bw,
						)
					}
				}
			}
			createPodFor(t, c, sched, group, "", group, tc.cpu, tc.mem, tc.bw)
			got := waitBound(ctx, t, c, group)
			switch {
			case sched == schedbench.BerthSchedulerName && got != nodes[tc.want]:
				t.Errorf("%s pod bound to %s, want %s", tc.name, got, nodes[tc.want])
			case sched == schedbench.DefaultSchedulerName && got == nodes[tc.want]:
				t.Errorf(
					"the default scheduler also binds the %s pod to %s: the case does not need berth",
					tc.name,
					got,
				)
			}
		}
	}
}

// TestSchedulerBurstDoesNotPileUp creates a burst of network-heavy pods at once: the assume cache
// and the bandwidth Filter must spread them so no node exceeds its 10G, and the pod that fits
// nowhere stays Pending with a reason naming bandwidth.
func TestSchedulerBurstDoesNotPileUp(t *testing.T) {
	ctx := t.Context()
	c := startScheduler(t)
	var nodes []string
	for i := range 5 {
		nodes = append(nodes, createNode(t, c, fmt.Sprintf("burst-%d", i), "burst"))
	}
	for i := range 25 { // 25 x 2G fills 5 x 10G exactly
		createPod(t, c, fmt.Sprintf("b-%d", i), "", "burst", "100m", "64Mi", "2G")
	}
	perNode := map[string]int{}
	for i := range 25 {
		perNode[waitBound(ctx, t, c, fmt.Sprintf("b-%d", i))]++
	}
	for _, n := range nodes {
		if perNode[n] != 5 {
			t.Errorf(
				"node %s got %d pods of 2G, want 5 (burst piled up: %v)",
				n,
				perNode[n],
				perNode,
			)
		}
	}
	createPod(t, c, "one-too-many", "", "burst", "100m", "64Mi", "2G")
	msg := waitUnschedulable(ctx, t, c, "one-too-many")
	if !strings.Contains(msg, balance.ErrReasonBandwidth) {
		t.Errorf("unschedulable message %q does not name the bandwidth", msg)
	}
}

func startScheduler(t *testing.T) kubernetes.Interface {
	t.Helper()
	env, cfg := testenv.StartAPIServer(t)
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	stop, err := schedbench.StartScheduler(t.Context(), dir, shippedConfig(t, kc))
	if err != nil {
		t.Fatalf("starting the berth scheduler: %v", err)
	}
	t.Cleanup(stop)
	return c
}

// shippedConfig is the KubeSchedulerConfiguration that manifests/scheduler ships, read from the
// manifest itself so the tests run the plugins and pluginConfig a cluster gets, with what only a
// test needs changed: the test apiserver's kubeconfig, no leader election, every node scored
// (percentageOfNodesToScore 100) and the upstream default profile next to berth's, which the
// tests use to show that a case needs berth.
func shippedConfig(t *testing.T, kubeconfig string) string {
	t.Helper()
	path := filepath.Join(testenv.RepoRoot(), "manifests", "scheduler", "configmap.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cm v1.ConfigMap
	if err := yaml.UnmarshalStrict(raw, &cm); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("%s: config.yaml: %v", path, err)
	}
	profiles, _ := cfg["profiles"].([]any)
	if len(profiles) != 1 {
		t.Fatalf("%s: want one profile (berth's), got %d", path, len(profiles))
	}
	berth, _ := profiles[0].(map[string]any)
	if berth["schedulerName"] != schedbench.BerthSchedulerName || berth["pluginConfig"] == nil {
		t.Fatalf("%s: the profile is not %s with a pluginConfig: %v", path,
			schedbench.BerthSchedulerName, berth)
	}
	cfg["clientConnection"] = map[string]any{"kubeconfig": kubeconfig, "qps": 5000, "burst": 5000}
	cfg["leaderElection"] = map[string]any{"leaderElect": false}
	cfg["percentageOfNodesToScore"] = 100
	cfg["profiles"] = []any{map[string]any{"schedulerName": schedbench.DefaultSchedulerName}, berth}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// createNode creates a 16-core, 64Gi node declaring 10G by annotation, labelled group=group.
func createNode(t *testing.T, c kubernetes.Interface, name, group string) string {
	t.Helper()
	rl := v1.ResourceList{
		v1.ResourceCPU:    resource.MustParse("16"),
		v1.ResourceMemory: resource.MustParse("64Gi"),
		v1.ResourcePods:   resource.MustParse("110"),
	}
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"group": group},
			Annotations: map[string]string{balance.AnnotationBandwidth: "10G"}},
		Status: v1.NodeStatus{Capacity: rl, Allocatable: rl},
	}
	created, err := c.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	created.Spec.Taints = nil // added by TaintNodesByCondition; no kubelet will clear it
	if _, err := c.CoreV1().Nodes().Update(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("untaint node %s: %v", name, err)
	}
	return name
}

// createPod creates a pod bound to node, or for the berth scheduler restricted to group.
func createPod(t *testing.T, c kubernetes.Interface, name, node, group, cpu, mem, bw string) {
	t.Helper()
	createPodFor(t, c, schedbench.BerthSchedulerName, name, node, group, cpu, mem, bw)
}

// createPodFor creates a pod bound to node, or for scheduler restricted to group.
func createPodFor(
	t *testing.T,
	c kubernetes.Interface,
	scheduler, name, node, group, cpu, mem, bw string,
) {
	t.Helper()
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   "default",
			Annotations: map[string]string{},
		},
		Spec: v1.PodSpec{NodeName: node, SchedulerName: scheduler,
			Containers: []v1.Container{
				{
					Name:  "app",
					Image: "registry.k8s.io/pause:3.10",
					Resources: v1.ResourceRequirements{
						Requests: v1.ResourceList{
							v1.ResourceCPU:    resource.MustParse(cpu),
							v1.ResourceMemory: resource.MustParse(mem),
						}},
				},
			}},
	}
	if group != "" {
		pod.Spec.NodeSelector = map[string]string{"group": group}
	}
	if bw != "" {
		pod.Annotations[balance.AnnotationEgressBandwidth] = bw
	}
	if _, err := c.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
}

func waitBound(ctx context.Context, t *testing.T, c kubernetes.Interface, name string) string {
	t.Helper()
	var node string
	err := wait.PollUntilContextTimeout(
		ctx,
		100*time.Millisecond,
		time.Minute,
		true,
		func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			node = p.Spec.NodeName
			return node != "", nil
		},
	)
	if err != nil {
		t.Fatalf("pod %s not bound: %v", name, err)
	}
	return node
}

func waitUnschedulable(
	ctx context.Context,
	t *testing.T,
	c kubernetes.Interface,
	name string,
) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(
		ctx,
		100*time.Millisecond,
		time.Minute,
		true,
		func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Spec.NodeName != "" {
				return false, fmt.Errorf(
					"pod %s was bound to %s, want it unschedulable",
					name,
					p.Spec.NodeName,
				)
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == v1.PodScheduled && cond.Reason == v1.PodReasonUnschedulable {
					msg = cond.Message
					return true, nil
				}
			}
			return false, nil
		},
	)
	if err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	return msg
}

// TestSchedulerPreemptsForBandwidth: a high-priority pod that fits only if a low-priority pod's
// annotated bandwidth is freed preempts it (the plugin's RemovePod in the preemption dry-run).
func TestSchedulerPreemptsForBandwidth(t *testing.T) {
	ctx := t.Context()
	c := startScheduler(t)
	pc := &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-test-high"},
		Value:      1000,
	}
	if _, err := c.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node := createNode(t, c, "preempt", "preempt")
	createPod(t, c, "victim", node, "", "100m", "64Mi", "8G")
	// A probe of normal priority proves the scheduler has seen the victim before the preemptor comes.
	createPod(t, c, "probe", "", "preempt", "100m", "64Mi", "5G")
	waitUnschedulable(ctx, t, c, "probe")
	if err := c.CoreV1().Pods("default").Delete(ctx, "probe", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "preemptor", Namespace: "default",
			Annotations: map[string]string{balance.AnnotationEgressBandwidth: "5G"}},
		Spec: v1.PodSpec{SchedulerName: schedbench.BerthSchedulerName, PriorityClassName: pc.Name,
			NodeSelector: map[string]string{"group": "preempt"},
			Containers: []v1.Container{
				{
					Name:  "app",
					Image: "registry.k8s.io/pause:3.10",
					Resources: v1.ResourceRequirements{
						Requests: v1.ResourceList{
							v1.ResourceCPU:    resource.MustParse("100m"),
							v1.ResourceMemory: resource.MustParse("64Mi"),
						}},
				},
			}},
	}
	if _, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Without a kubelet the victim stays Terminating, so the preemptor is nominated, not bound.
	err := wait.PollUntilContextTimeout(
		ctx,
		100*time.Millisecond,
		time.Minute,
		true,
		func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("default").Get(ctx, "preemptor", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return p.Status.NominatedNodeName == node || p.Spec.NodeName == node, nil
		},
	)
	if err != nil {
		p, _ := c.CoreV1().Pods("default").Get(ctx, "preemptor", metav1.GetOptions{})
		t.Fatalf("preemptor not nominated to %s: %v; status %+v", node, err, p.Status)
	}
	// The preemptor is nominated first; 1.35 deletes the victims asynchronously after that.
	err = wait.PollUntilContextTimeout(
		ctx,
		100*time.Millisecond,
		30*time.Second,
		true,
		func(ctx context.Context) (bool, error) {
			v, err := c.CoreV1().Pods("default").Get(ctx, "victim", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return err == nil && v.DeletionTimestamp != nil, err
		},
	)
	if err != nil {
		p, _ := c.CoreV1().Pods("default").Get(ctx, "preemptor", metav1.GetOptions{})
		t.Fatalf(
			"victim not deleted within 30s of the preemptor's nomination: %v (preemptor node %q, nominated %q)",
			err,
			p.Spec.NodeName,
			p.Status.NominatedNodeName,
		)
	}
}

// TestSchedulerRequeuesWhenBandwidthFreed: a pod unschedulable for bandwidth is scheduled as
// soon as the pod holding the bandwidth goes away (the plugin's queueing hint on pod deletion,
// and a Filter that trusts the scheduler's snapshot over a cache that has not seen the
// deletion yet), not after the queue's 5-minute flush of unschedulable pods.
func TestSchedulerRequeuesWhenBandwidthFreed(t *testing.T) {
	ctx := t.Context()
	c := startScheduler(t)
	node := createNode(t, c, "requeue", "requeue")
	createPod(t, c, "holder", node, "", "100m", "64Mi", "8G")
	createPod(t, c, "waiter", "", "requeue", "100m", "64Mi", "5G")
	if msg := waitUnschedulable(ctx, t, c, "waiter"); !strings.Contains(
		msg,
		balance.ErrReasonBandwidth,
	) {
		t.Fatalf("waiter unschedulable for %q, want the bandwidth", msg)
	}
	freed := time.Now()
	now := metav1.DeleteOptions{GracePeriodSeconds: new(int64)}
	if err := c.CoreV1().Pods("default").Delete(ctx, "holder", now); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(
		ctx,
		100*time.Millisecond,
		30*time.Second,
		true,
		func(ctx context.Context) (bool, error) {
			p, err := c.CoreV1().Pods("default").Get(ctx, "waiter", metav1.GetOptions{})
			return err == nil && p.Spec.NodeName == node, err
		},
	)
	if err != nil {
		t.Fatalf("waiter not bound to %s within 30s of the bandwidth being freed: %v", node, err)
	}
	t.Logf(
		"waiter bound %v after the holder was deleted",
		time.Since(freed).Round(time.Millisecond),
	)
}
