//go:build integration

package webhook_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/webhook"
)

// BenchmarkAdmissionReviewRate sends AdmissionReviews of an annotated pod to
// the running webhook server (TLS, keep-alive, as the apiserver does) at a
// fixed 1,000 reviews/s for 5 s and reports the latency percentiles. Run it
// with -benchtime=1x (hack/bench-webhook.sh does).
func BenchmarkAdmissionReviewRate(b *testing.B) {
	w := &envtest.WebhookInstallOptions{}
	if err := w.PrepWithoutInstalling(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = w.Cleanup() })
	// The same controller-runtime server and handler Run wires, without a manager (no apiserver needed).
	h, err := webhook.NewHandler(webhook.DefaultOptions(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := crwebhook.NewServer(crwebhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort,
		CertDir: w.LocalServingCertDir})
	srv.Register(webhook.Path, &crwebhook.Admission{Handler: h})
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	defer func() { cancel(); <-done }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.LocalServingCAData)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}
	url := fmt.Sprintf("https://%s:%d%s", w.LocalServingHost, w.LocalServingPort, webhook.Path)
	body := reviewBody(b)
	waitUp(b, client, url, body)
	// Open the keep-alive connections first: the apiserver reuses its connections too.
	var warm sync.WaitGroup
	for range 64 {
		warm.Go(func() { _ = post(client, url, body) })
	}
	warm.Wait()

	const rate, seconds = 1000, 5
	lat := make([]time.Duration, 0, rate*seconds)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := 0
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	b.ResetTimer()
	for range rate * seconds {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := post(client, url, body)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			lat = append(lat, d)
		}()
	}
	wg.Wait()
	b.StopTimer()
	if errs > 0 {
		b.Fatalf("%d of %d reviews failed", errs, rate*seconds)
	}
	reportPercentiles(b, "review", lat)
}

// BenchmarkPodCreate measures pod creation through a real kube-apiserver:
// a namespace that did not opt in (no webhook call), and an opted-in
// namespace, once for pods without berth annotations (the cost of the call
// itself) and once where every pod is injected (debug + preOnline: a bigger
// pod for the apiserver to validate and store, too).
func BenchmarkPodCreate(b *testing.B) {
	env, cfg := testenv.StartAPIServer(b, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{manifest}}
	})
	cfg.QPS, cfg.Burst = 1000, 1000
	cs := kubernetes.NewForConfigOrDie(cfg)
	t := b
	namespace(t, cs, "apps", true)
	namespace(t, cs, "plain", false)
	stop := startWebhook(t, cfg, runOptions(env))
	defer stop()
	waitServing(t, cs, "apps")
	const n = 300
	annos := map[string]string{"berth.dev/debug": "java", "berth.dev/preonline": "none"}
	cases := []struct {
		name, ns string
		annos    map[string]string
	}{
		{"without-webhook", "plain", annos},
		{"webhook-call-only", "apps", nil}, // the webhook is called and answers "no change"
		{"with-webhook", "apps", annos},
	}
	// Warm the apiserver and etcd first, so the first measured case is not penalised.
	for i := range 100 {
		if _, err := cs.CoreV1().Pods("plain").Create(context.Background(),
			appPod(fmt.Sprintf("warm-%d", i), nil), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range cases {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			start := time.Now()
			if _, err := cs.CoreV1().Pods(c.ns).Create(context.Background(),
				appPod(fmt.Sprintf("bench-%s-%d", c.name, i), c.annos), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportPercentiles(b, c.name, lat)
	}
}

func reportPercentiles(b *testing.B, name string, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(pct(0.50), name+"-p50-ms")
	b.ReportMetric(pct(0.99), name+"-p99-ms")
	b.ReportMetric(0, "ns/op")
}

func reviewBody(b *testing.B) []byte {
	pod := appPod("bench", map[string]string{
		"berth.dev/debug":     "java",
		"berth.dev/preonline": "inline:echo warm",
		"berth.dev/prestart":  "inline:echo prep",
	})
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "bench", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "apps",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	}
	body, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func post(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	if out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		return fmt.Errorf("unexpected review answer %+v", out.Response)
	}
	return nil
}

func waitUp(b *testing.B, c *http.Client, url string, body []byte) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if post(c, url, body) == nil {
			return
		}
	}
	b.Fatal("webhook server did not answer within 30s")
}
