package webhook

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GateAfter is the scheduling gate the webhook puts on a pod whose
// berth.dev/after Services are not ready yet; the AfterController removes it.
const GateAfter = "berth.dev/after"

// Bounds of berth.dev/after: the value is read before anything is allocated for it.
const (
	maxAfterValue    = 1024
	maxAfterServices = 16
	maxAfterReady    = 1000
	maxAfterTimeout  = 24 * time.Hour
	// DefaultAfterReady is how many ready endpoints each Service needs when berth.dev/after-ready is
	// not set.
	DefaultAfterReady = 1
)

// ServiceRef names one Service of berth.dev/after. Namespace is empty until
// Resolve fills in the pod's own namespace.
type ServiceRef struct {
	Namespace, Name string
}

func (s ServiceRef) String() string { return s.Namespace + "/" + s.Name }

// parseAfter reads "svc-a, other-ns/svc-b".
func parseAfter(k, v string) ([]ServiceRef, error) {
	if len(v) > maxAfterValue {
		return nil, bad(k, v, "%d characters, at most %d are allowed", len(v), maxAfterValue)
	}
	if strings.Count(v, ",") >= maxAfterServices {
		return nil, bad(k, v, "more than %d Services listed", maxAfterServices)
	}
	var out []ServiceRef
	seen := map[ServiceRef]bool{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		ref := ServiceRef{Name: item}
		if ns, name, ok := strings.Cut(item, "/"); ok {
			ref = ServiceRef{Namespace: ns, Name: name}
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, bad(k, v, "entry %q: namespace %q is not a namespace name", item, ns)
			}
		}
		if errs := validation.IsDNS1035Label(ref.Name); len(errs) > 0 {
			return nil, bad(k, v, "entry %q: %q is not a Service name (a DNS-1035 label)", item, ref.Name)
		}
		if seen[ref] {
			return nil, bad(k, v, "Service %q appears twice", item)
		}
		seen[ref] = true
		out = append(out, ref)
	}
	if len(out) == 0 {
		return nil, bad(k, v, "no Services listed")
	}
	return out, nil
}

// ServiceReadiness is what the webhook and the AfterController read about the
// Services of berth.dev/after (from the informer caches in the webhook Deployment).
type ServiceReadiness interface {
	// ReadyEndpoints counts the ready endpoints of a Service; exists is false when the Service is gone.
	ReadyEndpoints(ctx context.Context, ref ServiceRef) (ready int, exists bool, err error)
	// NamespaceOptedIn reports whether ns carries berth.dev/inject=enabled.
	NamespaceOptedIn(ctx context.Context, ns string) (bool, error)
}

// Field indexes of the cache: EndpointSlices by "namespace/service", pods by
// the Services they wait for (only while they carry GateAfter).
const (
	indexSliceService = "berth.dev/slice-service"
	indexPodAfter     = "berth.dev/pod-after"
)

// CacheReadiness is the ServiceReadiness of the manager's informer caches.
type CacheReadiness struct {
	Reader client.Reader
}

var _ ServiceReadiness = &CacheReadiness{}

// ReadyEndpoints counts the distinct ready endpoints of the Service's EndpointSlices. A dual-stack
// Service has one slice per address family naming the same pods: an endpoint is counted once.
func (c *CacheReadiness) ReadyEndpoints(ctx context.Context, ref ServiceRef) (int, bool, error) {
	svc := &corev1.Service{}
	if err := c.Reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name},
		svc); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("failed to read Service %s: %w", ref, err)
	}
	slices := &discoveryv1.EndpointSliceList{}
	if err := c.Reader.List(ctx, slices, client.InNamespace(ref.Namespace),
		client.MatchingFields{indexSliceService: ref.String()}); err != nil {
		return 0, true, fmt.Errorf("failed to list the EndpointSlices of %s: %w", ref, err)
	}
	return countReady(slices.Items), true, nil
}

// countReady counts distinct ready endpoints; a nil ready condition means ready (the API's rule).
func countReady(slices []discoveryv1.EndpointSlice) int {
	seen := map[string]bool{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			key := ""
			switch {
			case ep.TargetRef != nil:
				key = "ref/" + ep.TargetRef.Namespace + "/" + ep.TargetRef.Name + "/" + string(ep.TargetRef.UID)
			case len(ep.Addresses) > 0:
				key = "addr/" + string(s.AddressType) + "/" + ep.Addresses[0]
			default:
				continue
			}
			seen[key] = true
		}
	}
	return len(seen)
}

// NamespaceOptedIn reports whether the namespace carries berth.dev/inject=enabled.
func (c *CacheReadiness) NamespaceOptedIn(ctx context.Context, ns string) (bool, error) {
	n := &corev1.Namespace{}
	if err := c.Reader.Get(ctx, types.NamespacedName{Name: ns}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("failed to read namespace %s: %w", ns, err)
	}
	return n.Labels[LabelOptIn] == OptInValue, nil
}

// sliceServiceKey is the "namespace/service" an EndpointSlice belongs to (its
// kubernetes.io/service-name label).
func sliceServiceKey(o client.Object) []string {
	name := o.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return []string{o.GetNamespace() + "/" + name}
}

// hasGate reports whether the pod still carries GateAfter, and where.
func hasGate(pod *corev1.Pod) (int, bool) {
	for i, g := range pod.Spec.SchedulingGates {
		if g.Name == GateAfter {
			return i, true
		}
	}
	return -1, false
}

// podAfterKeys are the "namespace/service" keys a gated pod waits for (its index entries).
func podAfterKeys(o client.Object) []string {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	if _, gated := hasGate(pod); !gated {
		return nil
	}
	refs, err := parseAfter(AnnoAfter, strings.TrimSpace(pod.Annotations[AnnoAfter]))
	if err != nil {
		return nil
	}
	keys := make([]string, 0, len(refs))
	for _, r := range resolve(refs, pod.Namespace) {
		keys = append(keys, r.String())
	}
	return keys
}

// resolve fills in ns for the refs that name no namespace.
func resolve(refs []ServiceRef, ns string) []ServiceRef {
	out := make([]ServiceRef, len(refs))
	for i, r := range refs {
		if r.Namespace == "" {
			r.Namespace = ns
		}
		out[i] = r
	}
	return out
}

// checkAfterNamespaces refuses a Service in a namespace the pod may not wait on: one in
// skip (kube-system, kube-public, berth's own), or another namespace that did not opt in
// to berth. The waiting pod's Events report the other Service's ready endpoints: a
// namespace that did not opt in to berth does not have its state written into others'.
func checkAfterNamespaces(ctx context.Context, r ServiceReadiness, refs []ServiceRef, podNS string,
	skip map[string]bool) error {
	raw := refsString(refs)
	for _, ref := range refs {
		if ref.Namespace == podNS {
			continue
		}
		if skip[ref.Namespace] {
			return bad(AnnoAfter, raw, "Service %s: berth never waits on Services in namespace %q", ref,
				ref.Namespace)
		}
		if r == nil {
			return bad(AnnoAfter, raw, "Service %s is in another namespace, which this webhook cannot check",
				ref)
		}
		ok, err := r.NamespaceOptedIn(ctx, ref.Namespace)
		if err != nil {
			return err
		}
		if !ok {
			return bad(AnnoAfter, raw, "Service %s is in namespace %q, which is not labelled %s=%s; a pod "+
				"waits only on Services of its own namespace or of another opted-in one",
				ref, ref.Namespace, LabelOptIn, OptInValue)
		}
	}
	return nil
}

func refsString(refs []ServiceRef) string {
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// afterState is how far one pod's berth.dev/after condition is.
type afterState struct {
	need  int
	ready []int
	found []bool
	refs  []ServiceRef
}

// holds reports whether every Service has at least need ready endpoints.
func (s *afterState) holds() bool {
	for i := range s.refs {
		if !s.found[i] || s.ready[i] < s.need {
			return false
		}
	}
	return true
}

// missing lists the Services that do not exist.
func (s *afterState) missing() []string {
	var out []string
	for i, r := range s.refs {
		if !s.found[i] {
			out = append(out, r.String())
		}
	}
	return out
}

// String is the Event note: each Service with its ready endpoints against the need.
func (s *afterState) String() string {
	parts := make([]string, len(s.refs))
	for i, r := range s.refs {
		if !s.found[i] {
			parts[i] = r.String() + " (Service not found)"
			continue
		}
		parts[i] = r.String() + " (" + strconv.Itoa(s.ready[i]) + "/" + strconv.Itoa(s.need) + " ready endpoints)"
	}
	return strings.Join(parts, ", ")
}

// readAfterState reads the readiness of every Service of refs.
func readAfterState(ctx context.Context, r ServiceReadiness, refs []ServiceRef,
	need int) (*afterState, error) {
	s := &afterState{need: need, refs: refs, ready: make([]int, len(refs)), found: make([]bool, len(refs))}
	for i, ref := range refs {
		n, ok, err := r.ReadyEndpoints(ctx, ref)
		if err != nil {
			return nil, err
		}
		s.ready[i], s.found[i] = n, ok
	}
	return s, nil
}
