//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// The tests in this file need a cluster of at least 3 nodes (`make up`, which `make test` runs
// with NODES=3). They cross nodes: pod to pod over the VLAN trunk, addresses taken by three
// nodes at once, placement across nodes, and a node that dies.

// echoPodOn is the echo app pinned to a node (by its hostname label, through the scheduler).
func echoPodOn(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: ptr.To(int64(2)),
			Containers: []corev1.Container{{
				Name: "echo", Image: framework.Image("echo"),
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
			}},
		},
	}
}

// nodeLink is the host end of a node's link to the datacenter bridge (hack/cluster/node.sh).
func nodeLink(t *testing.T, node string) string {
	t.Helper()
	i := strings.TrimPrefix(node, os.Getenv("BERTH_NODE_PREFIX"))
	if i == node || i == "" {
		t.Fatalf("node %s is not one of the local cluster's (BERTH_NODE_PREFIX=%q): source hack/cluster/env",
			node, os.Getenv("BERTH_NODE_PREFIX"))
	}
	return "bn" + i
}

// captureTagged starts tcpdump on a host link for one frame matching filter, runs traffic until
// the frame is seen (or 30 s pass) and returns tcpdump's line for it.
func captureTagged(t *testing.T, link, filter string, traffic func()) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tcpdump", "-l", "-e", "-n", "-c", "1", "-i", link, filter)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("tcpdump (Debian's tcpdump, make deps): %v", err)
	}
	listening := make(chan struct{})
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if strings.Contains(s.Text(), "listening on") {
				close(listening)
				for s.Scan() {
				}
				return
			}
		}
	}()
	select {
	case <-listening:
	case <-ctx.Done():
		t.Fatalf("tcpdump on %s did not start", link)
	}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		s.Scan()
		line <- s.Text()
	}()
	for {
		traffic()
		select {
		case l := <-line:
			_ = cmd.Wait()
			return l
		case <-ctx.Done():
			t.Fatalf("no frame matching %q on %s in 30 s", filter, link)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestMultiNodeNetwork: pods of the VLAN on different nodes reach each other by pod IP, over a
// trunk that carries the VLAN's tag, and through a Service whose endpoints sit on two nodes; a
// host on another VLAN, in the same subnet, is unreachable from the pod VLAN but reachable from
// its own VLAN.
func TestMultiNodeNetwork(t *testing.T) {
	f := framework.New(t, nil)
	nodes := f.ReadyNodes(3)
	pool, subnet := vlanPool(f)
	labels := map[string]string{"app": "mn-echo"}
	ctx := f.Context()
	for i, name := range []string{"net-a", "net-b"} {
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, echoPodOn(name, nodes[i+1], labels),
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, echoPodOn("client", nodes[0], nil),
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("app=mn-echo", 2, 3*time.Minute)
	ip := map[string]string{}
	for _, name := range []string{"net-a", "net-b", "client"} {
		f.WaitFor(name+" Ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
			p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil || !framework.PodReady(p) {
				return false, err
			}
			a, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !subnet.Contains(a) {
				return false, fmt.Errorf("%s on %s has IP %q, not one of the pool %s",
					name, p.Spec.NodeName, p.Status.PodIP, subnet)
			}
			ip[name] = p.Status.PodIP
			return true, nil
		})
	}
	get := func(from, url string) (string, error) {
		out, stderr, err := f.Exec(from, "echo", "timeout", "5", "wget", "-q", "-O-", url)
		if err != nil {
			return "", fmt.Errorf("%s -> %s: %v %s", from, url, err, stderr)
		}
		return out, nil
	}

	t.Run("pod to pod across nodes, tagged on the trunk", func(t *testing.T) {
		url := "http://" + ip["net-b"] + ":8080/"
		if out, err := get("net-a", url); err != nil || !strings.Contains(out, "net-b") {
			t.Fatalf("net-a (%s) -> net-b (%s): %q %v", nodes[1], nodes[2], out, err)
		}
		cm, err := f.Client.CoreV1().ConfigMaps("berth-system").Get(ctx, "cni-vlan-config", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		frame := captureTagged(t, nodeLink(t, nodes[2]), fmt.Sprintf("vlan %s and host %s", cm.Data["vlan"], ip["net-b"]),
			func() { _, _ = get("net-a", url) })
		t.Logf("on %s's switch port: %s", nodes[2], frame)
		if !strings.Contains(frame, "vlan "+cm.Data["vlan"]) {
			t.Fatalf("the frame on the trunk is not tagged with VLAN %s: %s", cm.Data["vlan"], frame)
		}
	})

	t.Run("Service with endpoints on two nodes", func(t *testing.T) {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mn-echo"}, Spec: corev1.ServiceSpec{
			Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		svc, err := f.Client.CoreV1().Services(f.Namespace).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, url := range []string{"http://" + svc.Spec.ClusterIP + "/", "http://mn-echo/"} {
			f.WaitFor("answers from both endpoints through "+url, 2*time.Minute, func(context.Context) (bool, error) {
				out, err := get("client", url)
				if err != nil {
					t.Logf("%v (kube-proxy or DNS may not have caught up)", err)
					return false, nil
				}
				for _, name := range []string{"net-a", "net-b"} {
					seen[url+name] = seen[url+name] || strings.Contains(out, name)
				}
				return seen[url+"net-a"] && seen[url+"net-b"], nil
			})
		}
	})

	t.Run("another VLAN is unreachable", func(t *testing.T) {
		other := otherVLANHost(t, f, nodes[1], pool, subnet)
		peer := otherVLANHost(t, f, nodes[2], pool, subnet)
		url := "http://" + other.ip + ":8080/"
		if out, err := framework.NodeExec(nodes[2], "ip", "netns", "exec", peer.netns,
			"curl", "-sS", "-m", "5", url); err != nil || !strings.Contains(out, "vlan-200") {
			t.Fatalf("the other VLAN does not work between its own hosts (%s -> %s): %q %v", nodes[2], nodes[1], out, err)
		}
		for _, from := range []string{"net-a", "client"} {
			if out, err := get(from, url); err == nil {
				t.Fatalf("%s (VLAN of the pods) reached %s on VLAN 200: %q — tenants are not isolated", from, other.ip, out)
			}
		}
	})
}

// vlanHost is a network namespace inside a node, attached to a second VLAN by cni-vlan itself
// (the plugin binary the runtime uses, run as the runtime runs it), serving HTTP on 8080.
type vlanHost struct{ netns, ip string }

// otherVLANHost makes a host on VLAN 200 inside node, in the same subnet as the pod VLAN, with an
// address no pod of the pod VLAN holds; the test's cleanup deletes it through CNI DEL.
func otherVLANHost(t *testing.T, f *framework.Framework, node, pool string, subnet netip.Prefix) vlanHost {
	t.Helper()
	state := os.Getenv("BERTH_STATE")
	raw, err := os.ReadFile(filepath.Join(state, "nodes", node, "cni", "net.d", "10-berth.conflist"))
	if err != nil {
		t.Fatalf("cni-vlan's conflist on %s: %v", node, err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil || len(list.Plugins) == 0 {
		t.Fatalf("conflist on %s: %v", node, err)
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, "e2e-vlan200"
	conf["vlan"], conf["bridge"], conf["hostGateway"] = 200, "berth200", false
	ipam, _ := conf["ipam"].(map[string]any)
	if ipam == nil {
		t.Fatalf("no ipam section in cni-vlan's conflist on %s", node)
	}
	ipam["pool"] = "e2e-vlan200"
	ipam["poolSpec"] = map[string]any{"name": "e2e-vlan200", "vlan": 200, "subnet": subnet.String()}
	b, _ := json.Marshal(conf)
	dir := t.TempDir() // the node sees the host's /tmp
	confFile := filepath.Join(dir, "vlan200.conf")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(dir, "index.html"), []byte("vlan-200 on "+node+"\n"), 0o644)
	held := ipamHolders(f, pool)
	for attempt := 0; attempt < 5; attempt++ {
		h := vlanHost{netns: fmt.Sprintf("e2e-v200-%d-%d", time.Now().UnixNano()%100000, attempt)}
		cni := func(verb string) (string, error) {
			return framework.NodeExec(node, "sh", "-c", fmt.Sprintf(
				"CNI_COMMAND=%s CNI_CONTAINERID=%s CNI_NETNS=/run/netns/%s CNI_IFNAME=eth0 "+
					"CNI_PATH=%s/cni/bin %s/cni/bin/cni-vlan <%s",
				verb, h.netns, h.netns, state, state, confFile))
		}
		if out, err := framework.NodeExec(node, "ip", "netns", "add", h.netns); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		t.Cleanup(func() {
			if out, err := cni("DEL"); err != nil {
				t.Errorf("CNI DEL of %s on %s: %v %s", h.netns, node, err, out)
			}
			_, _ = framework.NodeExec(node, "sh", "-c", "ip netns pids "+h.netns+" | xargs -r kill; ip netns del "+h.netns)
		})
		out, err := cni("ADD")
		if err != nil {
			t.Fatalf("CNI ADD on VLAN 200 in %s: %v", node, err)
		}
		var res struct {
			IPs []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil || len(res.IPs) == 0 {
			t.Fatalf("CNI ADD result %q: %v", out, err)
		}
		h.ip = strings.Split(res.IPs[0].Address, "/")[0]
		if holder, taken := held[h.ip]; taken {
			t.Logf("VLAN 200 gave %s, which %s holds on the pod VLAN (allowed: another VLAN); taking another", h.ip, holder)
			continue
		}
		if out, err := framework.NodeExec(node, "ip", "netns", "exec", h.netns,
			"busybox", "httpd", "-p", "8080", "-h", dir); err != nil {
			t.Fatalf("httpd in %s: %v %s", h.netns, err, out)
		}
		return h
	}
	t.Fatalf("VLAN 200's pool kept handing out addresses the pod VLAN holds")
	return vlanHost{}
}

// TestMultiNodeIPAM: three nodes start 150 pods at once; every pod gets its own address from
// the one pool, the IPAM holds each for the right pod, and scaling to zero gives them all back.
func TestMultiNodeIPAM(t *testing.T) {
	f := framework.New(t, nil)
	nodes := f.ReadyNodes(3)
	pool, subnet := vlanPool(f)
	const replicas = 150
	labels := map[string]string{"app": "mn-ipam"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "mn-ipam"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(replicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
					Containers: []corev1.Container{{Name: "pause", Image: framework.Image("pause"),
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("2Mi")}}}},
				},
			},
		},
	}
	start := time.Now()
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(f.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	f.WaitFor(fmt.Sprintf("%d pods running", replicas), 10*time.Minute, func(ctx context.Context) (bool, error) {
		l, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=mn-ipam"})
		if err != nil {
			return false, err
		}
		pods = nil
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				pods = append(pods, p)
			}
		}
		return len(pods) == replicas, nil
	})
	t.Logf("%d pods running on %d nodes in %s", replicas, len(nodes), time.Since(start).Round(time.Second))
	owner := map[string]string{}
	perNode := map[string]int{}
	for _, p := range pods {
		a, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !subnet.Contains(a) {
			t.Errorf("%s: IP %q is not from the pool %s", p.Name, p.Status.PodIP, subnet)
		}
		if other, dup := owner[p.Status.PodIP]; dup {
			t.Errorf("%s and %s both have %s", p.Name, other, p.Status.PodIP)
		}
		owner[p.Status.PodIP] = p.Name
		perNode[p.Spec.NodeName]++
	}
	t.Logf("pods per node: %v", perNode)
	for _, n := range nodes[:3] {
		if perNode[n] == 0 {
			t.Errorf("no pod on %s: the test did not make three nodes allocate at once (%v)", n, perNode)
		}
	}
	held := ipamHolders(f, pool)
	for ip, pod := range owner {
		if held[ip] != f.Namespace+"/"+pod {
			t.Errorf("IPAM holds %s for %q, the pod with it is %s", ip, held[ip], pod)
		}
	}
	if t.Failed() {
		return
	}
	scale, err := f.Client.AppsV1().Deployments(f.Namespace).GetScale(f.Context(), "mn-ipam", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 0
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).UpdateScale(f.Context(), "mn-ipam", scale,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("every address back in the pool", 5*time.Minute, func(context.Context) (bool, error) {
		n := 0
		for _, holder := range ipamHolders(f, pool) {
			if strings.HasPrefix(holder, f.Namespace+"/") {
				n++
			}
		}
		return n == 0, nil
	})
}

// TestMultiNodeScheduler: the same mix of CPU-, memory- and network-heavy pods placed on the
// real nodes twice, by berth-scheduler and by the default scheduler: berth's per-node network
// demand is at least as even (it is usually far more: the default scheduler does not see it).
func TestMultiNodeScheduler(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("scheduler")
	nodes := f.ReadyNodes(3)
	cv := map[string]float64{}
	for _, scheduler := range []string{"berth-scheduler", "default-scheduler"} {
		demand := placeMix(t, f, scheduler, nodes)
		cv[scheduler] = coefficientOfVariation(demand, nodes)
		t.Logf("%s: egress bandwidth per node (Mbit/s) %v, CV %.3f", scheduler, demand, cv[scheduler])
	}
	if cv["berth-scheduler"] > cv["default-scheduler"] || cv["berth-scheduler"] > 0.25 {
		t.Errorf("network demand CV: berth %.3f, default %.3f; want berth <= default and <= 0.25",
			cv["berth-scheduler"], cv["default-scheduler"])
	}
}

// placeMix creates 6 CPU/memory-heavy pods, then 9 network-heavy ones, all with scheduler, and
// returns the network demand (Mbit/s) it placed on each node; the pods are deleted after.
func placeMix(t *testing.T, f *framework.Framework, scheduler string, nodes []string) map[string]float64 {
	t.Helper()
	mk := func(name string, cpu, mem string, egressMbit int) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Labels:      map[string]string{"mix": scheduler},
				Annotations: map[string]string{},
			},
			Spec: corev1.PodSpec{
				SchedulerName:                 scheduler,
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				Containers: []corev1.Container{{Name: "pause", Image: framework.Image("pause"),
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}},
			},
		}
		if egressMbit > 0 {
			p.Annotations["kubernetes.io/egress-bandwidth"] = fmt.Sprintf("%dM", egressMbit)
		}
		return p
	}
	var pods []*corev1.Pod
	for i := 0; i < 6; i++ {
		pods = append(pods, mk(fmt.Sprintf("%s-heavy-%d", scheduler[:5], i), "150m", "300Mi", 0))
	}
	for i := 0; i < 9; i++ {
		pods = append(pods, mk(fmt.Sprintf("%s-net-%d", scheduler[:5], i), "5m", "8Mi", 200))
	}
	demand := map[string]float64{}
	for i, node := range placeOneByOne(t, f, pods) {
		if i >= 6 {
			demand[node] += 200
		}
	}
	for _, n := range nodes {
		demand[n] += 0 // every node counts, also one that got nothing
	}
	deletePods(t, f, "mix="+scheduler)
	return demand
}

// placeOneByOne creates pods one at a time, each after the one before is bound, as a rollout
// does (each decision sees the one before), and returns the node each was bound to.
func placeOneByOne(t *testing.T, f *framework.Framework, pods []*corev1.Pod) []string {
	t.Helper()
	nodes := make([]string, len(pods))
	for i, p := range pods {
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		f.WaitFor(p.Name+" bound", 2*time.Minute, func(ctx context.Context) (bool, error) {
			got, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			nodes[i] = got.Spec.NodeName
			return nodes[i] != "", nil
		})
	}
	return nodes
}

// deletePods deletes the test namespace's pods matching selector and waits until they are gone.
func deletePods(t *testing.T, f *framework.Framework, selector string) {
	t.Helper()
	if err := f.Client.CoreV1().Pods(f.Namespace).DeleteCollection(f.Context(),
		metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))},
		metav1.ListOptions{LabelSelector: selector}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("pods "+selector+" deleted", 2*time.Minute, func(ctx context.Context) (bool, error) {
		l, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		return err == nil && len(l.Items) == 0, err
	})
}

func coefficientOfVariation(v map[string]float64, nodes []string) float64 {
	var sum, sq float64
	for _, n := range nodes {
		sum += v[n]
	}
	mean := sum / float64(len(nodes))
	if mean == 0 {
		return 0
	}
	for _, n := range nodes {
		sq += (v[n] - mean) * (v[n] - mean)
	}
	return math.Sqrt(sq/float64(len(nodes))) / mean
}
