//go:build integration

package webhook_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/webhook"
)

// BenchmarkAfterUngate measures, for 1, 100 and 1,000 pods waiting with berth.dev/after, the time
// from the write that gives A's EndpointSlice a ready endpoint to each waiting pod being bound to
// a node by a real kube-scheduler (and, separately, to its gate being removed). In the same run,
// the common workaround: as many init containers polling A every second
// (`until wget -q http://a; do sleep 1; done`, random phases), timed from the moment A answers
// to each poll that succeeds. The workaround's pods are bound already (they hold a node, an IP
// and their volumes while they poll); its figure leaves out kube-proxy's programming delay, in
// its favour. And the floor this machine sets: the same n pods, gated with another gate, whose
// gates 16 goroutines remove with bare JSON patches (no controller, no informer, no Event), timed
// from the first patch to each pod bound: what any ungating controller costs at least here.
// Rounds: $BERTH_BENCH_ROUNDS (default 3). Run with -benchtime=1x (hack/bench-webhook.sh does).
func BenchmarkAfterUngate(b *testing.B) {
	env, cfg := testenv.StartAPIServer(b, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{manifest}}
	})
	cfg.QPS, cfg.Burst = 2000, 2000
	cs := kubernetes.NewForConfigOrDie(cfg)
	namespace(b, cs, "berth-system", false)
	namespace(b, cs, "apps", true)
	o := runOptions(env)
	o.Reporter, o.AfterWorkers, o.QPS, o.Burst = false, webhook.DefaultAfterWorkers, webhook.DefaultQPS,
		webhook.DefaultBurst
	startWebhook(b, cfg, o)
	waitServing(b, cs, "apps")
	startScheduler(b, env, cs)
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	sizes := []int{1, 100, 1000}
	if v := os.Getenv("BERTH_BENCH_PODS"); v != "" { // e.g. "1,100" for a quick run
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("BERTH_BENCH_PODS=%q: want pod counts like 1,100,1000", v)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			var bound, ungated, polled, floor []roundResult
			for r := range rounds {
				ns := fmt.Sprintf("after-%d-%d", n, r)
				namespace(b, cs, ns, true)
				u, bd := berthRound(b, cs, ns, n)
				ungated, bound = append(ungated, u), append(bound, bd)
				polled = append(polled, pollingRound(b, n))
				floorNS := fmt.Sprintf("floor-%d-%d", n, r)
				namespace(b, cs, floorNS, false)
				floor = append(floor, floorRound(b, cs, floorNS, n))
			}
			reportRounds(b, "berth-bound", bound)
			reportRounds(b, "berth-ungated", ungated)
			reportRounds(b, "polling", polled)
			reportRounds(b, "floor-bound", floor)
		})
	}
}

// roundResult is one round's percentiles in milliseconds.
type roundResult struct{ p50, p99 float64 }

func percentiles(lat []time.Duration) roundResult {
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	return roundResult{pct(0.50), pct(0.99)}
}

// reportRounds reports the median over the rounds of p50 and p99, and the spread of p99 (min, max).
func reportRounds(b *testing.B, name string, rs []roundResult) {
	var p50, p99 []float64
	for _, r := range rs {
		p50, p99 = append(p50, r.p50), append(p99, r.p99)
	}
	slices.Sort(p50)
	slices.Sort(p99)
	b.ReportMetric(p50[len(p50)/2], name+"-p50-ms")
	b.ReportMetric(p99[len(p99)/2], name+"-p99-ms")
	b.ReportMetric(p99[0], name+"-p99-min-ms")
	b.ReportMetric(p99[len(p99)-1], name+"-p99-max-ms")
	b.ReportMetric(0, "ns/op")
}

// berthRound creates n pods waiting for a new Service, waits until the controller has seen them
// all, makes the Service ready and times each pod's ungating and binding.
func berthRound(b *testing.B, cs kubernetes.Interface, ns string, n int) (ungated, bound roundResult) {
	ctx := b.Context()
	service(b, cs, ns, "a")
	w := watchPods(b, cs, ns, webhook.GateAfter)
	defer w.stop()
	before := afterReconciles(b)
	createWaiting(b, cs, ns, n)
	// Every pod reconciled at least once and nothing queued: the controller knows them all.
	// (Not the Events: a loaded apiserver makes the recorder drop some, by design.)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, true,
		func(context.Context) (bool, error) {
			return afterReconciles(b) >= before+float64(n) && afterQueueDepth(b) == 0, nil
		})
	if err != nil {
		b.Fatalf("the controller did not see all %d waiting pods: %v", n, err)
	}
	t0 := time.Now()
	endpoints(b, cs, ns, "a", true)
	return w.wait(b, t0, n)
}

// podTimes records when each pod of a namespace was first seen without the gate and with a node.
type podTimes struct {
	mu                sync.Mutex
	gateGone, nodeSet map[string]time.Time
	stop              func() // stops the informer
}

// watchPods starts an informer on ns's pods that fills a podTimes until its stop.
func watchPods(b *testing.B, cs kubernetes.Interface, ns, gate string) *podTimes {
	w := &podTimes{gateGone: map[string]time.Time{}, nodeSet: map[string]time.Time{}}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	record := func(_, obj any) {
		p := obj.(*corev1.Pod)
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.gateGone[p.Name]; !ok && !hasGate(p, gate) {
			w.gateGone[p.Name] = now
		}
		if _, ok := w.nodeSet[p.Name]; !ok && p.Spec.NodeName != "" {
			w.nodeSet[p.Name] = now
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: record}); err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	w.stop = func() { close(stop) }
	f.Start(stop)
	f.WaitForCacheSync(stop)
	return w
}

// wait returns, once all n pods are ungated and bound, the percentiles of both since t0.
func (w *podTimes) wait(b *testing.B, t0 time.Time, n int) (ungated, bound roundResult) {
	err := wait.PollUntilContextTimeout(b.Context(), 20*time.Millisecond, 5*time.Minute, true,
		func(context.Context) (bool, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			return len(w.nodeSet) == n && len(w.gateGone) == n, nil
		})
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		b.Fatalf("%d of %d pods bound after t0: %v", len(w.nodeSet), n, err)
	}
	since := func(m map[string]time.Time) []time.Duration {
		var out []time.Duration
		for _, t := range m {
			out = append(out, t.Sub(t0))
		}
		return out
	}
	return percentiles(since(w.gateGone)), percentiles(since(w.nodeSet))
}

// floorGate gates the floor round's pods; the berth controller does not know it.
const floorGate = "bench.berth.dev/floor"

// floorRound creates n pods gated with floorGate in a namespace the webhook does not serve,
// then removes the gates itself, 16 patches at a time, each the JSON patch the controller sends,
// and returns the time from the first patch to each pod bound.
func floorRound(b *testing.B, cs kubernetes.Interface, ns string, n int) roundResult {
	w := watchPods(b, cs, ns, floorGate)
	defer w.stop()
	inParallel(b, n, func(i int) error {
		p := appPod(fmt.Sprintf("f-%d", i), nil)
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: floorGate}}
		_, err := cs.CoreV1().Pods(ns).Create(b.Context(), p, metav1.CreateOptions{})
		return err
	})
	patch := []byte(fmt.Sprintf(`[{"op":"test","path":"/spec/schedulingGates/0/name","value":%q},`+
		`{"op":"remove","path":"/spec/schedulingGates/0"}]`, floorGate))
	t0 := time.Now()
	inParallel(b, n, func(i int) error {
		_, err := cs.CoreV1().Pods(ns).Patch(b.Context(), fmt.Sprintf("f-%d", i), types.JSONPatchType, patch,
			metav1.PatchOptions{})
		return err
	})
	_, bound := w.wait(b, t0, n)
	return bound
}

// inParallel runs f(0..n-1), 16 at a time, and fails the benchmark on the first error.
func inParallel(b *testing.B, n int, f func(i int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// createWaiting creates n pods waiting for Service a, 16 at a time.
func createWaiting(b *testing.B, cs kubernetes.Interface, ns string, n int) {
	inParallel(b, n, func(i int) error {
		got, err := cs.CoreV1().Pods(ns).Create(b.Context(), afterPod(fmt.Sprintf("b-%d", i), "a", nil),
			metav1.CreateOptions{})
		if err == nil && !gated(got) {
			err = fmt.Errorf("pod %s not gated", got.Name)
		}
		return err
	})
}

// pollingRound runs n pollers of an HTTP endpoint that starts answering 2 s into the round.
func pollingRound(b *testing.B, n int) roundResult {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var mu sync.Mutex
	var t0 time.Time
	lat := make([]time.Duration, 0, n)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	for range n {
		wg.Go(func() {
			// Each init container started at its own moment: a random phase in the 1 s period.
			time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
			for ctx.Err() == nil {
				if resp, err := client.Get("http://" + addr + "/"); err == nil {
					resp.Body.Close()
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					return
				}
				time.Sleep(time.Second) // the workaround's `sleep 1`
			}
		})
	}
	time.Sleep(2 * time.Second) // every poller is in its loop
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	t0 = time.Now()
	mu.Unlock()
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
		ReadHeaderTimeout: time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	wg.Wait()
	_ = srv.Close()
	if len(lat) != n {
		b.Fatalf("%d of %d pollers saw A", len(lat), n)
	}
	return percentiles(lat)
}

// startScheduler runs the real kube-scheduler (hack/build-kube.sh) against the test apiserver,
// with 10 Ready nodes to bind to (no kubelet: binding is what is measured).
func startScheduler(b *testing.B, env *envtest.Environment, cs kubernetes.Interface) {
	bin := testenv.KubeBinary(b, "kube-scheduler")
	user, err := env.AddUser(envtest.User{Name: "bench-scheduler", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	kubeconfig, config := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "scheduler.yaml")
	conf := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: %q, qps: 2000, burst: 2000}
leaderElection: {leaderElect: false}
`, kubeconfig)
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i),
			Labels: map[string]string{corev1.LabelHostname: fmt.Sprintf("node-%d", i)}}}
		created, err := cs.CoreV1().Nodes().Create(b.Context(), node, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("256Gi"), corev1.ResourcePods: resource.MustParse("2000")}
		created.Status = corev1.NodeStatus{Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}}
		updated, err := cs.CoreV1().Nodes().UpdateStatus(b.Context(), created, metav1.UpdateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		// The apiserver taints a new node not-ready (TaintNodesByCondition); no node lifecycle
		// controller runs here to lift it.
		updated.Spec.Taints = nil
		if _, err := cs.CoreV1().Nodes().Update(b.Context(), updated, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config="+config, "--secure-port=0", "--v=1")
	log, err := os.Create(filepath.Join(dir, "kube-scheduler.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		log.Close()
		if b.Failed() {
			out, _ := os.ReadFile(log.Name())
			b.Logf("kube-scheduler log (last 3000 bytes):\n%s", out[max(0, len(out)-3000):])
		}
	})
}

// afterReconciles is controller-runtime's count of the AfterController's reconciles (this process).
func afterReconciles(b *testing.B) float64 {
	return gathered(b, "controller_runtime_reconcile_total", "controller", "berth-after")
}

// afterQueueDepth is the length of the AfterController's work queue.
func afterQueueDepth(b *testing.B) float64 {
	return gathered(b, "workqueue_depth", "name", "berth-after")
}

// gathered sums the samples of metric whose label has value, from controller-runtime's registry.
func gathered(b *testing.B, metric, label, value string) float64 {
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}
