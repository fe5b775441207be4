package webhook

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// maxCyclePods bounds the pods of one hop that get the cycle's Event (a Deployment's replicas).
const maxCyclePods = 20

// cycleHop is one Service on a wait cycle and its gated pods that wait for the next Service.
type cycleHop struct {
	svc  ServiceRef
	pods []*corev1.Pod
}

// cycleFinder searches the graph "Service -> the Services its gated pods wait for" for a path
// from the start pod's Services back to a Service that selects the start pod.
type cycleFinder struct {
	r       *AfterController
	targets map[ServiceRef]bool
	visited map[ServiceRef]bool
}

// checkCycle posts a Warning on the pod and on the gated pods of the cycle, naming it, when the
// pod waits (through other pods' berth.dev/after) for a Service that the pod itself backs:
// none of them can ever start, and silence would look like an ordinary wait.
func (r *AfterController) checkCycle(ctx context.Context, pod *corev1.Pod, refs []ServiceRef) error {
	targets, err := r.servicesSelecting(ctx, pod)
	if err != nil || len(targets) == 0 {
		return err
	}
	f := &cycleFinder{r: r, targets: targets, visited: map[ServiceRef]bool{}}
	for _, ref := range refs {
		hops, err := f.visit(ctx, ref, 0)
		if err != nil {
			return err
		}
		if hops == nil {
			continue
		}
		names := []string{hops[len(hops)-1].svc.String()}
		for _, h := range hops {
			names = append(names, h.svc.String())
		}
		note := fmt.Sprintf("wait cycle: %s (the pods of each Service wait, through %s, for the next); "+
			"none of them can start: remove %s from one of them", strings.Join(names, " -> "), AnnoAfter,
			AnnoAfter)
		r.post(pod, corev1.EventTypeWarning, ReasonAfterCycle, note)
		for _, h := range hops {
			for _, p := range h.pods {
				r.post(p, corev1.EventTypeWarning, ReasonAfterCycle, note)
			}
		}
		return nil
	}
	return nil
}

// servicesSelecting are the Services of the pod's namespace whose selector matches the pod.
func (r *AfterController) servicesSelecting(ctx context.Context,
	pod *corev1.Pod) (map[ServiceRef]bool, error) {
	svcs := &corev1.ServiceList{}
	if err := r.client.List(ctx, svcs, client.InNamespace(pod.Namespace)); err != nil {
		return nil, fmt.Errorf("failed to list the Services of namespace %s: %w", pod.Namespace, err)
	}
	out := map[ServiceRef]bool{}
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			out[ServiceRef{Namespace: s.Namespace, Name: s.Name}] = true
		}
	}
	return out, nil
}

// visit returns the hops from s to a target Service, or nil.
func (f *cycleFinder) visit(ctx context.Context, s ServiceRef, depth int) ([]cycleHop, error) {
	if f.targets[s] {
		return []cycleHop{{svc: s}}, nil
	}
	if depth >= maxCycleDepth || f.visited[s] {
		return nil, nil
	}
	f.visited[s] = true
	waiters, err := f.r.gatedPodsOf(ctx, s)
	if err != nil {
		return nil, err
	}
	next := make([]ServiceRef, 0, len(waiters))
	for n := range waiters {
		next = append(next, n)
	}
	sort.Slice(next, func(i, j int) bool { return next[i].String() < next[j].String() })
	for _, n := range next {
		hops, err := f.visit(ctx, n, depth+1)
		if err != nil || hops != nil {
			return append([]cycleHop{{svc: s, pods: waiters[n]}}, hops...), err
		}
	}
	return nil, nil
}

// gatedPodsOf maps each Service that the gated pods behind s wait for to those pods.
func (r *AfterController) gatedPodsOf(ctx context.Context,
	s ServiceRef) (map[ServiceRef][]*corev1.Pod, error) {
	svc := &corev1.Service{}
	if err := r.client.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name},
		svc); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if len(svc.Spec.Selector) == 0 {
		return nil, nil
	}
	pods := &corev1.PodList{}
	if err := r.client.List(ctx, pods, client.InNamespace(s.Namespace),
		client.MatchingLabels(svc.Spec.Selector)); err != nil {
		return nil, fmt.Errorf("failed to list the pods of Service %s: %w", s, err)
	}
	out := map[ServiceRef][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if _, gated := hasGate(p); !gated {
			continue
		}
		refs, err := parseAfter(AnnoAfter, strings.TrimSpace(p.Annotations[AnnoAfter]))
		if err != nil {
			continue
		}
		for _, ref := range resolve(refs, p.Namespace) {
			if len(out[ref]) < maxCyclePods {
				out[ref] = append(out[ref], p)
			}
		}
	}
	return out, nil
}
