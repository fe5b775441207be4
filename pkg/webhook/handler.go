package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Name is the component name used in logs, metrics and the webhook path.
const Name = "berth-webhook"

// Path is where the webhook server serves pod mutations.
const Path = "/mutate-v1-pod"

// Handler mutates pods as their berth.dev/ annotations ask. It implements admission.Handler.
type Handler struct {
	opts Options
	skip map[string]bool

	total    *prometheus.CounterVec
	duration prometheus.Histogram
}

var _ admission.Handler = &Handler{}

// NewHandler returns a handler that never touches the namespaces in skip
// (kube-system, kube-public and its own are always added). Metrics go to reg when it is not nil.
func NewHandler(opts Options, skip []string, reg prometheus.Registerer) (*Handler, error) {
	if opts.Image == "" || opts.HookBinary == "" || opts.HealthPort <= 0 || opts.HealthPort > 65535 {
		return nil, fmt.Errorf("webhook options need an image, a hook binary path and a health port in 1..65535, got %q %q %d", opts.Image, opts.HookBinary, opts.HealthPort)
	}
	h := &Handler{
		opts: opts,
		skip: map[string]bool{"kube-system": true, "kube-public": true},
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_webhook_admissions_total",
			Help: "Pod admission reviews answered, by result (injected, skipped, denied, errored).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "berth_webhook_admission_duration_seconds",
			Help:    "Time to answer one pod admission review inside the handler.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}),
	}
	for _, ns := range skip {
		if ns != "" {
			h.skip[ns] = true
		}
	}
	if reg != nil {
		var err error
		if h.total, err = register(reg, h.total); err != nil {
			return nil, err
		}
		if h.duration, err = register(reg, h.duration); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// register adds c to reg, or reuses the collector already there (a second handler in one process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &are):
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("failed to register webhook metrics: %w", err)
}

// Handle answers one AdmissionReview for a pod.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resp, result := h.handle(ctx, req)
	h.total.WithLabelValues(result).Inc()
	h.duration.Observe(time.Since(start).Seconds())
	return resp
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, string) {
	log := klog.FromContext(ctx).WithValues("namespace", req.Namespace, "name", req.Name, "uid", req.UID)
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("not a pod create"), "skipped"
	}
	if h.skip[req.Namespace] {
		return admission.Allowed(fmt.Sprintf("berth never mutates pods in namespace %q", req.Namespace)), "skipped"
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode pod: %w", err)), "errored"
	}
	if AlreadyInjected(pod) {
		// Re-admission or reinvocation: everything was injected already.
		return admission.Allowed("berth already injected (" + AnnoStatus + " is set)"), "skipped"
	}
	if _, ok := pod.Annotations[AnnoStatus]; ok {
		log.V(2).Info("Ignoring a berth.dev/status the pod's containers and volumes do not match; it is overwritten")
	}
	cfg, err := ParseAnnotations(pod.Annotations)
	if err != nil {
		log.V(2).Info("Denied pod: bad annotation", "err", err)
		return admission.Denied("berth: " + err.Error()), "denied"
	}
	if !cfg.Enabled() {
		return admission.Allowed("no berth.dev/ annotations"), "skipped"
	}
	patches, err := MutationPatch(pod, cfg, h.opts)
	if err != nil {
		log.V(2).Info("Denied pod", "err", err)
		return admission.Denied("berth: " + err.Error()), "denied"
	}
	log.V(4).Info("Injected", "operations", len(patches))
	return admission.Patched("berth injected", patches...), "injected"
}
