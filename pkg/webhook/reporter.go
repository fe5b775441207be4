package webhook

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// ReasonPreStartFailed is the reason of the Warning Event posted when berth-prestart fails.
const ReasonPreStartFailed = "PreStartFailed"

// maxNote is the longest Event note the API accepts (1 KiB); longer messages are cut.
const maxNote = 1000

// PreStartReporter posts a Warning Event on a pod whose berth-prestart init
// container terminated with an error, with the hook's termination message
// (what failed, how many attempts, what to do). The hook itself cannot post
// Events without giving every app's ServiceAccount RBAC on events, so the
// webhook's Deployment does it, for pods carrying the berth.dev/injected label
// only. It runs on the leader replica only, so each failure is reported once.
type PreStartReporter struct {
	client   client.Reader
	recorder events.EventRecorder

	mu       sync.Mutex
	reported map[types.NamespacedName]string
}

var _ reconcile.Reconciler = &PreStartReporter{}

// NewPreStartReporter returns a reporter reading pods with c and posting Events through rec.
func NewPreStartReporter(c client.Reader, rec events.EventRecorder) *PreStartReporter {
	return &PreStartReporter{client: c, recorder: rec, reported: map[types.NamespacedName]string{}}
}

// SetupWithManager registers the reporter as a controller of injected pods.
func (r *PreStartReporter) SetupWithManager(mgr ctrl.Manager) error {
	injected := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[LabelInjected] == "true" })
	return builder.ControllerManagedBy(mgr).
		Named("berth-prestart-reporter").
		For(&corev1.Pod{}, builder.WithPredicates(injected)).
		Complete(r)
}

// Reconcile posts one Event per failed run of berth-prestart.
func (r *PreStartReporter) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result,
	error) {
	pod := &corev1.Pod{}
	if err := r.client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("failed to get pod %s: %w", req.NamespacedName, err)
	}
	for _, st := range pod.Status.InitContainerStatuses {
		if st.Name != PreStartName {
			continue
		}
		term := st.State.Terminated
		if term == nil {
			term = st.LastTerminationState.Terminated
		}
		if term == nil || term.ExitCode == 0 {
			return reconcile.Result{}, nil
		}
		key := fmt.Sprintf("%s/%d/%s/%s", pod.UID, st.RestartCount, term.FinishedAt.UTC(), term.ContainerID)
		if !r.markReported(req.NamespacedName, key) {
			return reconcile.Result{}, nil
		}
		msg := term.Message
		if msg == "" {
			msg = term.Reason
		}
		note := fmt.Sprintf("berth preStart hook failed (exit code %d, restarts %d): %s", term.ExitCode,
			st.RestartCount, msg)
		if len(note) > maxNote {
			note = note[:maxNote-3] + "..."
		}
		r.recorder.Eventf(pod, nil, corev1.EventTypeWarning, ReasonPreStartFailed, "PreStart", "%s", note)
		klog.FromContext(ctx).Info("Reported failed preStart", "pod", req.NamespacedName, "exitCode",
			term.ExitCode)
	}
	return reconcile.Result{}, nil
}

// markReported records key for the pod and reports whether it is new.
func (r *PreStartReporter) markReported(pod types.NamespacedName, key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reported[pod] == key {
		return false
	}
	r.reported[pod] = key
	return true
}

func (r *PreStartReporter) forget(pod types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.reported, pod)
}
