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
	opts      Options
	skip      map[string]bool
	readiness ServiceReadiness

	total    *prometheus.CounterVec
	duration prometheus.Histogram
}

var _ admission.Handler = &Handler{}

// NewHandler returns a handler that never touches the namespaces in skip
// (kube-system, kube-public and its own are always added). Metrics go to reg when it is not nil.
func NewHandler(opts Options, skip []string, reg prometheus.Registerer) (*Handler, error) {
	if opts.Image == "" || opts.HookBinary == "" || opts.HealthPort <= 0 || opts.HealthPort > 65535 {
		return nil, fmt.Errorf("webhook options need an image, a hook binary path and a health port in "+
			"1..65535, got %q %q %d", opts.Image, opts.HookBinary, opts.HealthPort)
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
		return admission.Allowed(fmt.Sprintf("berth never mutates pods in namespace %q", req.Namespace)),
			"skipped"
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("failed to decode pod: %w", err)),
			"errored"
	}
	cfg, err := ParseAnnotations(pod.Annotations)
	if err != nil {
		log.V(2).Info("Denied pod: bad annotation", "err", err)
		return admission.Denied("berth: " + err.Error()), "denied"
	}
	if !cfg.Enabled() {
		return admission.Allowed("no berth.dev/ annotations"), "skipped"
	}
	if pod.Labels[LabelOptIn] != OptInValue {
		// Without the label the pod does not wait for this webhook during an outage (the
		// configuration's objectSelector): it would start uninjected then. Refuse it now too.
		return admission.Denied(fmt.Sprintf("berth: the pod has berth.dev/ annotations but not the "+
			"label %s=%s, "+
			"which makes berth required for it (without it, the pod would start without berth whenever the "+
			"webhook is down); "+
			"add the label to the pod template's metadata.labels", LabelOptIn, OptInValue)), "denied"
	}
	if AlreadyInjected(pod, cfg) {
		// Re-admission or reinvocation: everything was injected already.
		return admission.Allowed("berth already injected (" + AnnoStatus + " is set)"), "skipped"
	}
	if _, ok := pod.Annotations[AnnoStatus]; ok {
		log.V(2).Info("Ignoring a berth.dev/status that does not match the pod and its annotations; it " +
			"is overwritten")
	}
	if err := h.decideGate(ctx, pod, req.Namespace, cfg); err != nil {
		log.V(2).Info("Denied pod", "err", err)
		return admission.Denied("berth: " + err.Error()), "denied"
	}
	patches, err := MutationPatch(pod, cfg, h.opts)
	if err != nil {
		log.V(2).Info("Denied pod", "err", err)
		return admission.Denied("berth: " + err.Error()), "denied"
	}
	log.V(4).Info("Injected", "operations", len(patches))
	return admission.Patched("berth injected", patches...), "injected"
}

// SetReadiness gives the handler the informer caches it reads berth.dev/after's Services
// from. Without it, every pod with berth.dev/after is gated and may name only Services of
// its own namespace.
func (h *Handler) SetReadiness(r ServiceReadiness) { h.readiness = r }

// decideGate resolves berth.dev/after and sets cfg.AfterHolds when every Service is ready
// already. A failed read gates the pod: the controller removes the gate once it can read.
func (h *Handler) decideGate(ctx context.Context, pod *corev1.Pod, ns string, cfg *Config) error {
	if len(cfg.After) == 0 {
		return nil
	}
	cfg.After = resolve(cfg.After, ns)
	if err := checkAfterNamespaces(ctx, h.readiness, cfg.After, ns, h.skip); err != nil {
		return err
	}
	if h.readiness == nil {
		return nil
	}
	st, err := readAfterState(ctx, h.readiness, cfg.After, cfg.AfterReady)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Gating the pod: could not read its Services", "err", err)
		return nil
	}
	cfg.AfterHolds = st.holds()
	return nil
}
