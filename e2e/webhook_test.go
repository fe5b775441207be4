//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

var optIn = map[string]string{"berth.dev/inject": "enabled"}

// webhookUp waits for both replicas of the installed webhook.
func webhookUp(t *testing.T, f *framework.Framework) {
	t.Helper()
	f.RequireBerth("webhook")
	f.WaitFor("berth-webhook Deployment with 2 ready replicas", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := f.Client.AppsV1().Deployments("berth-system").Get(ctx, "berth-webhook", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return d.Status.ReadyReplicas >= 2, nil
	})
}

// hookappPod is a hookapp pod; with berth.dev/ annotations it carries berth.dev/inject=enabled,
// the label that sends a pod to the webhook.
func hookappPod(name string, annos map[string]string, args ...string) *corev1.Pod {
	labels := map[string]string{"app": name}
	for k := range annos {
		if strings.HasPrefix(k, "berth.dev/") {
			labels["berth.dev/inject"] = "enabled"
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annos},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(30)),
			Containers: []corev1.Container{{
				Name: "app", Image: framework.Image("hookapp"), Args: append([]string{"--addr=:8080"}, args...),
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/check", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
}

// stamp finds the RFC 3339 timestamp hookapp put in front of the first line containing what.
func stamp(t *testing.T, log, what string) time.Time {
	t.Helper()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, what) {
			ts, err := time.Parse(time.RFC3339Nano, strings.Fields(l)[0])
			if err != nil {
				t.Fatalf("no timestamp in %q: %v", l, err)
			}
			return ts
		}
	}
	t.Fatalf("app log has no %q:\n%s", what, log)
	return time.Time{}
}

// followLogs streams a container's log until it ends (the container exits).
func followLogs(t *testing.T, f *framework.Framework, pod, container string) func() string {
	t.Helper()
	var mu sync.Mutex
	var b strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		rc, err := f.Client.CoreV1().Pods(f.Namespace).GetLogs(pod,
			&corev1.PodLogOptions{Container: container, Follow: true}).Stream(f.Context())
		if err != nil {
			return
		}
		defer rc.Close()
		s := bufio.NewScanner(rc)
		for s.Scan() {
			mu.Lock()
			b.WriteString(s.Text() + "\n")
			mu.Unlock()
		}
	}()
	return func() string {
		select {
		case <-done:
		case <-time.After(90 * time.Second):
		}
		mu.Lock()
		defer mu.Unlock()
		return b.String()
	}
}

// TestWebhookLifecycleOrder: preStart before the app; no endpoint until the
// preOnline warm-up is done; on delete, marker removed, drain, then SIGTERM.
func TestWebhookLifecycleOrder(t *testing.T) {
	f := framework.New(t, optIn)
	webhookUp(t, f)
	ctx := f.Context()
	annos := map[string]string{
		"berth.dev/prestart":  "inline:echo PRESTART ran at $(date -u +%s)",
		"berth.dev/preonline": "inline:echo warming up; sleep 5; echo WARMUP-DONE",
		"berth.dev/drain":     "6s",
	}
	pod := hookappPod("order", annos, "--watch-marker=/berth/online/healthcheck.html", "--start-delay=2s")
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "order"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "order"},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := f.Client.CoreV1().Services(f.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Watch the Service's endpoints: note when the pod first becomes a ready endpoint.
	var firstReady time.Time
	f.WaitFor("a ready endpoint for Service order", 3*time.Minute, func(ctx context.Context) (bool, error) {
		ok := readyEndpoint(ctx, f)
		if ok {
			firstReady = time.Now().UTC()
		}
		return ok, nil
	})
	app := f.Logs("order", "app")
	if markerAt := stamp(t, app, "MARKER appeared"); firstReady.Before(markerAt) {
		t.Errorf("endpoint ready at %s before the marker (end of warm-up) at %s", firstReady, markerAt)
	}
	// The sidecar log, stamped by the kubelet: check URL up, then the whole warm-up, then ONLINE;
	// the endpoint only after the warm-up finished.
	side := timestampedLogs(t, f, "order", "berth-sidecar")
	if !regexp.MustCompile(`(?s)check URL answered 2xx.*\swarming up\n` +
		`.*\sWARMUP-DONE\n.*ONLINE, marker written`).MatchString(side) {
		t.Errorf("want check URL 2xx, warming up, WARMUP-DONE, ONLINE in that order in the sidecar log:\n%s", side)
	}
	warmStart, warmDone := stamp(t, side, "warming up"), stamp(t, side, "WARMUP-DONE")
	if warmDone.Sub(warmStart) < 4*time.Second {
		t.Errorf("warm-up took %s, the script sleeps 5s: its output is not live or not the script's", warmDone.Sub(warmStart))
	}
	if firstReady.Before(warmDone) {
		t.Errorf("endpoint ready at %s before the warm-up finished at %s", firstReady, warmDone)
	}
	if pre := f.Logs("order", "berth-prestart"); !strings.Contains(pre, "PRESTART ran at") {
		t.Errorf("preStart output is not in its log:\n%s", pre)
	}
	p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, "order", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	preEnd := initStatus(p, "berth-prestart").State.Terminated.FinishedAt.Time
	if appStart := stamp(t, app, "hookapp START"); appStart.Before(preEnd) {
		t.Errorf("app started at %s before preStart finished at %s", appStart, preEnd)
	}
	// Delete: marker removed first, drain 6s, then SIGTERM.
	logs := followLogs(t, f, "order", "app")
	if err := f.Client.CoreV1().Pods(f.Namespace).Delete(ctx, "order", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	final := logs()
	removed, term := stamp(t, final, "MARKER removed"), stamp(t, final, "SIGTERM received")
	if !removed.Before(term) || term.Sub(removed) < 5*time.Second {
		t.Errorf("want marker removed, then >= the 6s drain, then SIGTERM; got removed %s, SIGTERM %s", removed, term)
	}
}

// timestampedLogs returns a container's log with the kubelet's RFC 3339 timestamp on each line.
func timestampedLogs(t *testing.T, f *framework.Framework, pod, container string) string {
	t.Helper()
	b, err := f.Client.CoreV1().Pods(f.Namespace).GetLogs(pod,
		&corev1.PodLogOptions{Container: container, Timestamps: true}).DoRaw(f.Context())
	if err != nil {
		t.Fatalf("logs of %s container %s: %v", pod, container, err)
	}
	return string(b)
}

func readyEndpoint(ctx context.Context, f *framework.Framework) bool {
	l, err := f.Client.DiscoveryV1().EndpointSlices(f.Namespace).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=order"})
	if err != nil {
		return false
	}
	for _, s := range l.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				return true
			}
		}
	}
	return false
}

func initStatus(p *corev1.Pod, name string) corev1.ContainerStatus {
	for _, s := range p.Status.InitContainerStatuses {
		if s.Name == name {
			return s
		}
	}
	return corev1.ContainerStatus{}
}

func appRestarts(t *testing.T, f *framework.Framework, pod string) int32 {
	t.Helper()
	p, err := f.Client.CoreV1().Pods(f.Namespace).Get(f.Context(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "app" {
			return s.RestartCount
		}
	}
	return -1
}

// TestWebhookDebugLiveness: an app that stops answering while a debugger is
// attached is not restarted; once the debugger leaves it is; a dead process is restarted.
func TestWebhookDebugLiveness(t *testing.T) {
	f := framework.New(t, optIn)
	webhookUp(t, f)
	ctx := f.Context()
	pod := hookappPod("debug",
		map[string]string{"berth.dev/debug": "port", "berth.dev/debug-port": "5005"},
		"--debug-addr=127.0.0.1:5005")
	pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/check", Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 2, FailureThreshold: 2, TimeoutSeconds: 1}
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := f.WaitPodsReady("app=debug", 1, 3*time.Minute)
	ip := ready[0].Status.PodIP
	// The proxy listens on the pod's loopback only: other pods must not reach it (tried from
	// the pod's node, which reaches every address of the pod; the tests run outside the cluster).
	if out, err := framework.NodeExec(ready[0].Spec.NodeName, "timeout", "3", "bash", "-c",
		"exec 3<>/dev/tcp/"+ip+"/"+debugProxyPort); err == nil {
		t.Fatalf("the debug proxy answers on the pod IP %s: any pod could attach a debugger (%s)", ip, out)
	}
	// An IDE attaches through kubectl port-forward, which reaches the pod's loopback.
	conn := portForward(t, f, "debug", debugProxyPort)
	debugEcho(t, conn)
	httpPost(t, ready[0].Spec.NodeName, "http://"+net.JoinHostPort(ip, "8080")+"/hang")
	time.Sleep(20 * time.Second) // 10 liveness periods with the check URL hung
	if n := appRestarts(t, f, "debug"); n != 0 {
		t.Fatalf("app restarted %d times while a debugger was attached", n)
	}
	debugEcho(t, conn)
	conn.Close() // the debugger leaves; the app still hangs: now it must be restarted
	f.WaitFor("app restarted after the debugger left", 2*time.Minute, func(context.Context) (bool, error) {
		return appRestarts(t, f, "debug") >= 1, nil
	})
	f.WaitPodsReady("app=debug", 1, 3*time.Minute)
	// A dead process is restarted too.
	p, _ := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, "debug", metav1.GetOptions{})
	httpPost(t, p.Spec.NodeName, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/exit")
	f.WaitFor("app restarted after its process died", 2*time.Minute, func(context.Context) (bool, error) {
		return appRestarts(t, f, "debug") >= 2, nil
	})
}

// debugProxyPort is the webhook's default berth.dev/debug-proxy-port.
const debugProxyPort = "15105"

// portForward opens one connection to port on the pod's loopback through the
// apiserver's pods/portforward, as `kubectl port-forward` does. Closing the
// connection ends the stream; the forwarder stops with the test.
func portForward(t *testing.T, f *framework.Framework, pod, port string) net.Conn {
	t.Helper()
	req := f.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(f.Namespace).Name(pod).
		SubResource("portforward")
	rt, upgrader, err := spdy.RoundTripperFor(f.Config)
	if err != nil {
		t.Fatal(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + port},
		stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	t.Cleanup(func() { close(stop) })
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("port-forward to %s:%s: %v", pod, port, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("port-forward to %s:%s not ready after 30s", pod, port)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("port-forward ports: %v %v", ports, err)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local), 5*time.Second)
	if err != nil {
		t.Fatalf("debugger cannot reach the berth debug proxy through port-forward: %v", err)
	}
	return c
}

func debugEcho(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "JDWP-Handshake"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 14)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("debug session through the proxy: %v", err)
	}
}

// httpPost POSTs to url from a node of the cluster (pod IPs are not reachable from outside it).
func httpPost(t *testing.T, node, url string) {
	t.Helper()
	if out, err := framework.NodeExec(node, "curl", "-sS", "-m", "10", "-X", "POST", url); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// TestWebhookSafety: kube-system untouched, bad annotation refused with key and example.
func TestWebhookSafety(t *testing.T) {
	f := framework.New(t, optIn)
	webhookUp(t, f)
	ctx := f.Context()
	annos := map[string]string{"berth.dev/debug": "java"}
	p, err := f.Client.CoreV1().Pods("kube-system").Create(ctx, hookappPod("berth-e2e-untouched", annos),
		metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Spec.InitContainers) != 0 || p.Annotations["berth.dev/status"] != "" {
		t.Errorf("kube-system pod was mutated: %v", p.Spec.InitContainers)
	}
	_, err = f.Client.CoreV1().Pods(f.Namespace).Create(ctx,
		hookappPod("bad", map[string]string{"berth.dev/debug": "python"}), metav1.CreateOptions{})
	if err == nil || !regexp.MustCompile(`berth\.dev/debug.*unknown debug mode.*example`).MatchString(err.Error()) {
		t.Errorf("want a denial naming berth.dev/debug with an example, got %v", err)
	}
}

// TestWebhookDown (runs last): with no webhook replica, pods that use berth (labelled
// berth.dev/inject=enabled) are refused ("failed calling webhook"), and so is a pod with berth.dev/
// annotations but no label (by the apiserver's own policy); every other pod is unaffected: a
// plain Deployment in an opted-in namespace scales up, and other namespaces work as before.
func TestWebhookDown(t *testing.T) {
	f := framework.New(t, optIn)
	plain := framework.New(t, nil)
	webhookUp(t, f)
	ctx := f.Context()
	scale := func(ns, name string, n int32) {
		// The deployment controller writes the Deployment too (its status): retry a conflict,
		// as kubectl scale does.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := f.Client.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Spec.Replicas = n
			_, err = f.Client.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatalf("scale %s/%s to %d: %v", ns, name, n, err)
		}
	}
	web := hookappPod("web", nil)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: web.ObjectMeta, Spec: web.Spec},
		},
	}
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("app=web", 1, 3*time.Minute)

	scale("berth-system", "berth-webhook", 0)
	t.Cleanup(func() { scale("berth-system", "berth-webhook", 2); webhookUp(t, f) })
	annotated := map[string]string{"berth.dev/debug": "java"}
	f.WaitFor("no berth-webhook endpoints", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx,
			hookappPod(fmt.Sprintf("down-%d", time.Now().UnixNano()), annotated),
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil && strings.Contains(err.Error(), "failed calling webhook"), nil
	})
	scale(f.Namespace, "web", 3)
	f.WaitPodsReady("app=web", 3, 3*time.Minute)

	sneaky := hookappPod("sneaky", annotated)
	delete(sneaky.Labels, "berth.dev/inject")
	_, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, sneaky, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "berth.dev/inject=enabled") {
		t.Errorf("a pod with berth.dev/ annotations but no label started while the webhook is down: %v", err)
	}
	if _, err := plain.Client.CoreV1().Pods(plain.Namespace).Create(ctx, hookappPod("unaffected", nil),
		metav1.CreateOptions{}); err != nil {
		t.Errorf("a namespace that did not opt in is affected by the webhook being down: %v", err)
	}
}

// waitPodEvent waits for an Event of reason on the pod whose message contains want.
func waitPodEvent(f *framework.Framework, pod, reason, want string) string {
	f.T.Helper()
	var msg string
	f.WaitFor(fmt.Sprintf("a %s Event on %s containing %q", reason, pod, want), 2*time.Minute,
		func(ctx context.Context) (bool, error) {
			evs, err := f.Client.CoreV1().Events(f.Namespace).List(ctx,
				metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod + ",reason=" + reason})
			if err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if strings.Contains(e.Message, want) {
					msg = e.Message
					return true, nil
				}
			}
			return false, nil
		})
	return msg
}

// schedulingGated reports whether the pod shows SchedulingGated, as kubectl get pods does.
func schedulingGated(ctx context.Context, f *framework.Framework, name string) (bool, error) {
	p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonSchedulingGated {
			return p.Spec.NodeName == "", nil
		}
	}
	return false, nil
}

func createService(t *testing.T, f *framework.Framework, name string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": name},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := f.Client.CoreV1().Services(f.Namespace).Create(f.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookAfter: berth.dev/after on the local cluster. B, deployed first, stays
// SchedulingGated (no node, no IP) with an Event naming what it waits for; A becomes ready;
// B is scheduled and runs. A Service with no pods (A at 0 replicas) keeps its waiter gated.
// Two pods waiting for each other get a Warning naming the cycle.
func TestWebhookAfter(t *testing.T) {
	f := framework.New(t, optIn)
	webhookUp(t, f)
	ctx := f.Context()
	createService(t, f, "a")
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx,
		hookappPod("b", map[string]string{"berth.dev/after": "a"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitFor("pod b SchedulingGated", time.Minute,
		func(ctx context.Context) (bool, error) { return schedulingGated(ctx, f, "b") })
	t.Logf("b waits: %s", waitPodEvent(f, "b", "WaitingForServices", "a (0/1 ready endpoints)"))
	if p, _ := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, "b", metav1.GetOptions{}); p.Status.PodIP != "" {
		t.Errorf("a gated pod holds an IP: %s", p.Status.PodIP)
	}

	createService(t, f, "idle") // A at 0 replicas: a Service without pods
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx,
		hookappPod("c", map[string]string{"berth.dev/after": "idle"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodEvent(f, "c", "WaitingForServices", "idle (0/1 ready endpoints)")

	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, hookappPod("a", nil),
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("app=b", 1, 3*time.Minute)
	waitPodEvent(f, "b", "ServicesReady", "gate berth.dev/after removed")
	if gated, err := schedulingGated(ctx, f, "c"); err != nil || !gated {
		t.Errorf("c (waiting for a Service with no pods) is no longer gated: %v", err)
	}

	createService(t, f, "x")
	createService(t, f, "y")
	for _, p := range []*corev1.Pod{
		hookappPod("x", map[string]string{"berth.dev/after": "y"}),
		hookappPod("y", map[string]string{"berth.dev/after": "x"}),
	} {
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"x", "y"} {
		t.Logf("%s: %s", p, waitPodEvent(f, p, "WaitCycle", "wait cycle"))
	}
}
