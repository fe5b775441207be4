package webhook

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Reasons of the Events the AfterController posts on a waiting pod.
const (
	// ReasonAfterWaiting (Normal): which Services the pod waits for and how many ready endpoints each has.
	ReasonAfterWaiting = "WaitingForServices"
	// ReasonAfterReady (Normal): the Services are ready, the scheduling gate is removed.
	ReasonAfterReady = "ServicesReady"
	// ReasonAfterMissing (Warning): a Service the pod waits for does not exist; it keeps waiting.
	ReasonAfterMissing = "ServiceNotFound"
	// ReasonAfterTimeout (Warning): still waiting after berth.dev/after-timeout; it keeps waiting.
	ReasonAfterTimeout = "WaitingTooLong"
	// ReasonAfterCycle (Warning): the pod waits, through other pods, for itself.
	ReasonAfterCycle = "WaitCycle"
	// ReasonAfterInvalid (Warning): the pod's berth.dev/after was changed to a value berth refuses.
	ReasonAfterInvalid = "InvalidAfter"
)

// maxCycleDepth bounds the search for a cycle of berth.dev/after (Services on the path).
const maxCycleDepth = 16

// AfterController removes the berth.dev/after scheduling gate from a pod once
// every Service its berth.dev/after names has enough ready endpoints. It reads
// EndpointSlices, Services and gated pods from informers: an EndpointSlice
// change wakes exactly the pods waiting on its Service, nothing polls. It runs
// on the leader replica of the webhook Deployment; the gates are its state, in
// the API, so a restart or a failover loses no pod.
type AfterController struct {
	client    client.Client
	readiness ServiceReadiness
	recorder  record.EventRecorder
	clock     clock.PassiveClock
	skip      map[string]bool
	workers   int

	mu sync.Mutex
	// posted is the last note of each kind posted per pod: an Event is posted when it changes.
	posted map[types.NamespacedName]map[string]string
}

var _ reconcile.Reconciler = &AfterController{}

// NewAfterController returns a controller reading through c (the manager's cached client), posting
// Events through rec, never accepting Services in the skip namespaces, with workers reconciles at once.
//
// rec is a core/v1 recorder, not an events.k8s.io one: the latter folds Events of the same reason
// into a series that keeps the first note, so a wait going from 0/2 to 1/2 ready endpoints would
// go on saying 0/2; the core correlator records each distinct note.
func NewAfterController(c client.Client, rec record.EventRecorder, skip []string,
	workers int) *AfterController {
	s := map[string]bool{"kube-system": true, "kube-public": true}
	for _, ns := range skip {
		s[ns] = true
	}
	return &AfterController{
		client: c, readiness: &CacheReadiness{Reader: c}, recorder: rec, clock: clock.RealClock{},
		skip: s, workers: max(workers, 1), posted: map[types.NamespacedName]map[string]string{},
	}
}

// AddAfterIndexes registers the cache indexes the webhook and the controller read through.
func AddAfterIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &discoveryv1.EndpointSlice{}, indexSliceService,
		sliceServiceKey); err != nil {
		return fmt.Errorf("failed to index EndpointSlices by Service: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexPodAfter, podAfterKeys); err != nil {
		return fmt.Errorf("failed to index pods by berth.dev/after: %w", err)
	}
	return nil
}

// SetupWithManager watches gated pods, and EndpointSlices and Services mapped to the pods waiting
// on them.
func (r *AfterController) SetupWithManager(mgr ctrl.Manager) error {
	gated := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		if !ok {
			return false
		}
		_, g := hasGate(pod)
		return g
	})
	return builder.ControllerManagedBy(mgr).
		Named("berth-after").
		For(&corev1.Pod{}, builder.WithPredicates(gated)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.podsWaitingOnSlice)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.podsWaitingOnService)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.workers}).
		Complete(r)
}

func (r *AfterController) podsWaitingOnSlice(ctx context.Context, o client.Object) []reconcile.Request {
	var reqs []reconcile.Request
	for _, key := range sliceServiceKey(o) {
		reqs = append(reqs, r.waiting(ctx, key)...)
	}
	return reqs
}

func (r *AfterController) podsWaitingOnService(ctx context.Context,
	o client.Object) []reconcile.Request {
	return r.waiting(ctx, o.GetNamespace()+"/"+o.GetName())
}

// waiting lists the gated pods waiting on the Service key ("namespace/name"), in any namespace.
func (r *AfterController) waiting(ctx context.Context, key string) []reconcile.Request {
	pods := &corev1.PodList{}
	if err := r.client.List(ctx, pods, client.MatchingFields{indexPodAfter: key}); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to list the pods waiting on a Service", "service", key)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(pods.Items))
	for i := range pods.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
	}
	return reqs
}

// Reconcile removes the gate of one pod when its Services are ready, or says why it waits.
func (r *AfterController) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result,
	error) {
	pod := &corev1.Pod{}
	if err := r.client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("failed to get pod %s: %w", req.NamespacedName, err)
	}
	idx, gated := hasGate(pod)
	if !gated || pod.DeletionTimestamp != nil {
		r.forget(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	refs, need, timeout, err := r.podAfter(ctx, pod)
	if err != nil {
		r.post(pod, corev1.EventTypeWarning, ReasonAfterInvalid, err.Error()+"; the pod keeps waiting")
		return reconcile.Result{}, nil
	}
	if refs == nil {
		// berth.dev/after was removed from the pod: nothing left to wait for.
		return reconcile.Result{}, r.ungate(ctx, pod, idx, "berth.dev/after was removed")
	}
	st, err := readAfterState(ctx, r.readiness, refs, need)
	if err != nil {
		return reconcile.Result{}, err
	}
	if st.holds() {
		return reconcile.Result{}, r.ungate(ctx, pod, idx, "ready: "+st.String())
	}
	r.post(pod, corev1.EventTypeNormal, ReasonAfterWaiting, "waiting for "+st.String())
	if m := st.missing(); len(m) > 0 {
		r.post(pod, corev1.EventTypeWarning, ReasonAfterMissing, fmt.Sprintf(
			"Service %s not found; the pod keeps waiting until it exists and has %d ready endpoints",
			strings.Join(m, ", "), need))
	}
	if err := r.checkCycle(ctx, pod, refs); err != nil {
		return reconcile.Result{}, err
	}
	return r.checkTimeout(pod, st, timeout), nil
}

// podAfter reads the pod's berth.dev/after (nil refs: the annotation is gone) with the same
// rules as admission: an annotation edited after creation gets no more than a new pod would.
func (r *AfterController) podAfter(ctx context.Context, pod *corev1.Pod) ([]ServiceRef, int,
	time.Duration, error) {
	annos := map[string]string{}
	for _, k := range []string{AnnoAfter, AnnoAfterReady, AnnoAfterTimeout} {
		if v, ok := pod.Annotations[k]; ok {
			annos[k] = v
		}
	}
	if _, ok := annos[AnnoAfter]; !ok {
		return nil, 0, 0, nil
	}
	cfg, err := ParseAnnotations(annos)
	if err != nil {
		return nil, 0, 0, err
	}
	refs := resolve(cfg.After, pod.Namespace)
	if err := checkAfterNamespaces(ctx, r.readiness, refs, pod.Namespace, r.skip); err != nil {
		return nil, 0, 0, err
	}
	return refs, cfg.AfterReady, cfg.AfterTimeout, nil
}

// ungate removes GateAfter from the pod. The JSON patch tests that the gate is still where it
// was read: a concurrent change of the gates fails the patch instead of removing another gate.
func (r *AfterController) ungate(ctx context.Context, pod *corev1.Pod, idx int, why string) error {
	patch := fmt.Sprintf(`[{"op":"test","path":"/spec/schedulingGates/%d/name","value":%q},`+
		`{"op":"remove","path":"/spec/schedulingGates/%d"}]`, idx, GateAfter, idx)
	if err := r.client.Patch(ctx, pod, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to remove the scheduling gate %s from pod %s/%s: %w", GateAfter,
			pod.Namespace, pod.Name, err)
	}
	r.forget(client.ObjectKeyFromObject(pod))
	r.recorder.Eventf(pod, corev1.EventTypeNormal, ReasonAfterReady, "%s; scheduling gate %s removed",
		clipNote(why), GateAfter)
	klog.FromContext(ctx).V(4).Info("Removed the scheduling gate", "pod", klog.KObj(pod), "why", why)
	return nil
}

// checkTimeout posts the Warning once the pod has waited berth.dev/after-timeout, or
// asks to be woken at that moment (a timer, not a poll: one wake-up per pod).
func (r *AfterController) checkTimeout(pod *corev1.Pod, st *afterState,
	timeout time.Duration) reconcile.Result {
	if timeout <= 0 {
		return reconcile.Result{}
	}
	waited := r.clock.Since(pod.CreationTimestamp.Time)
	if waited < timeout {
		return reconcile.Result{RequeueAfter: timeout - waited}
	}
	r.post(pod, corev1.EventTypeWarning, ReasonAfterTimeout, fmt.Sprintf(
		"still waiting after %s (%s: %s): %s; the pod stays gated until they are ready",
		timeout, AnnoAfterTimeout, timeout, st))
	return reconcile.Result{}
}

// post records an Event of reason on the pod when its note differs from the last one posted.
func (r *AfterController) post(pod *corev1.Pod, typ, reason, note string) {
	key := client.ObjectKeyFromObject(pod)
	r.mu.Lock()
	last := r.posted[key]
	if last == nil {
		last = map[string]string{}
		r.posted[key] = last
	}
	same := last[reason] == note
	last[reason] = note
	r.mu.Unlock()
	if !same {
		r.recorder.Eventf(pod, typ, reason, "%s", clipNote(note))
	}
}

func (r *AfterController) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.posted, key)
}

// clipNote keeps an Event note under the API's 1 KiB.
func clipNote(s string) string {
	if len(s) > maxNote {
		return s[:maxNote-3] + "..."
	}
	return s
}
