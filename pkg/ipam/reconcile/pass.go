package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/ipam"
)

func allocKey(a ipam.Allocation) string {
	return a.Pool + "/" + a.IP.Addr().String() + "/" + a.Handle.Key() + "/" + a.Handle.PodUID
}

// ReconcileOnce makes one pass: it releases the addresses whose pod has been
// missing for the grace period (and still is, asked live), returning them.
func (r *Reconciler) ReconcileOnce(ctx context.Context) ([]ipam.Allocation, error) {
	if !r.pods.HasSynced() {
		return nil, errors.New("reconcile: pod informer not synced")
	}
	log := klog.FromContext(ctx)
	all, err := r.alloc.ListAllocations(ctx, r.opts.Pool)
	if err != nil {
		return nil, fmt.Errorf("reconcile: list allocations: %w", err)
	}
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var released []ipam.Allocation
	for _, a := range all {
		h := a.Handle
		if a.Held() {
			// A held fixed IP waits for its pod, unless its StatefulSet is gone.
			key := "held/" + allocKey(a) + "/" + h.PodNamespace + "/" + h.PodName
			seen[key] = true
			if rel, ok := r.reclaimHeld(ctx, key, a, now); ok {
				released = append(released, rel)
			}
			continue
		}
		if h.IsBuffer() {
			// A node agent's buffer: free only once its node is gone.
			key := "buffer/" + allocKey(a)
			seen[key] = true
			if rel, ok := r.reclaimBuffer(ctx, key, a, now); ok {
				released = append(released, rel)
			}
			continue
		}
		if h.PodUID == "" {
			// No UID: not a pod we can identify safely (CNI GC on its node covers it).
			continue
		}
		key := allocKey(a)
		seen[key] = true
		if r.podExists(h.PodUID) || now.Sub(a.AllocatedAt) < r.opts.GracePeriod {
			delete(r.missing, key)
			continue
		}
		first, ok := r.missing[key]
		if !ok {
			r.missing[key] = now
			log.V(2).Info("Pod of an allocation is missing; waiting for the grace period", "pool", a.Pool,
				"ip", a.IP.Addr(), "pod", klog.KRef(h.PodNamespace, h.PodName), "podUID", h.PodUID)
			continue
		}
		if now.Sub(first) < r.opts.GracePeriod {
			continue
		}
		gone, err := r.podGoneLive(ctx, h)
		if err != nil {
			log.Error(err, "Re-checking the pod failed; keeping its address", "pod",
				klog.KRef(h.PodNamespace, h.PodName))
			continue
		}
		if !gone {
			delete(r.missing, key)
			continue
		}
		// The pod object is gone, but a force-deleted pod, or a pod on a node cut
		// off from the apiserver, may still run with the address: only a node
		// that is gone proves it unused. On a live node the node's agent frees it
		// (it sees the attachment is gone) and so does the runtime's CNI GC.
		if gone, err := r.nodeGone(ctx, h.Node); err != nil || !gone {
			if err != nil {
				log.Error(err, "Checking the node of a missing pod failed; keeping its address", "node", h.Node)
			} else {
				r.waiting.Inc()
				log.V(2).Info("Pod is gone but its node is not: its address is left to the node", "pool",
					a.Pool, "ip", a.IP.Addr(),
					"pod", klog.KRef(h.PodNamespace, h.PodName), "node", h.Node)
			}
			continue
		}
		rel, err := r.alloc.ReleaseIP(ctx, a.Pool, a.IP.Addr(), h)
		if errors.Is(err, ipam.ErrNotFound) || errors.Is(err, ipam.ErrOwnerMismatch) {
			delete(r.missing, key) // released or reused meanwhile
			continue
		}
		if err != nil {
			return released, fmt.Errorf("reconcile: release %s: %w", a.IP.Addr(), err)
		}
		delete(r.missing, key)
		r.released.Inc()
		released = append(released, rel)
		log.Info("Released the address of a pod that no longer exists", "pool", a.Pool, "ip", a.IP.Addr(),
			"pod", klog.KRef(h.PodNamespace, h.PodName), "podUID", h.PodUID, "container", h.ContainerID,
			"node", h.Node)
	}
	for k := range r.missing {
		if !seen[k] {
			delete(r.missing, k)
		}
	}
	r.leaked.Set(float64(len(r.missing)))
	return released, nil
}

// reclaimHeld frees a fixed IP held for a StatefulSet pod once the
// StatefulSet (by the namespace and name recorded with the address) has been
// missing for the grace period and still is, asked again, with no pod of that
// name either. It unpins the pod, which frees the held address. r.mu is held.
func (r *Reconciler) reclaimHeld(ctx context.Context, key string, a ipam.Allocation,
	now time.Time) (ipam.Allocation, bool) {
	log := klog.FromContext(ctx)
	h := a.Handle
	sts, ok := statefulSetOf(h.PodName)
	if h.PodNamespace == "" || !ok {
		return ipam.Allocation{}, false
	}
	gone, err := r.statefulSetGone(ctx, h.PodNamespace, sts, h.PodName)
	if err != nil {
		log.Error(err, "Checking the StatefulSet of a held fixed IP failed; keeping it", "pool", a.Pool,
			"ip", a.IP.Addr(), "statefulSet", klog.KRef(h.PodNamespace, sts))
		return ipam.Allocation{}, false
	}
	if !gone {
		delete(r.missing, key)
		return ipam.Allocation{}, false
	}
	first, seen := r.missing[key]
	if !seen {
		r.missing[key] = now
		log.V(2).Info("StatefulSet of a held fixed IP is gone; waiting for the grace period", "pool",
			a.Pool, "ip", a.IP.Addr(), "pod", klog.KRef(h.PodNamespace, h.PodName))
		return ipam.Allocation{}, false
	}
	if now.Sub(first) < r.opts.GracePeriod {
		return ipam.Allocation{}, false
	}
	// Re-check right before the release: the StatefulSet may be back.
	if gone, err := r.statefulSetGone(ctx, h.PodNamespace, sts, h.PodName); err != nil || !gone {
		if err != nil {
			log.Error(err, "Re-checking the StatefulSet failed; keeping its fixed IP", "statefulSet",
				klog.KRef(h.PodNamespace, sts))
		}
		delete(r.missing, key)
		return ipam.Allocation{}, false
	}
	delete(r.missing, key)
	err = r.alloc.Unpin(ctx, a.Pool, h.PodNamespace, h.PodName)
	if errors.Is(err, ipam.ErrNotFound) {
		// No pin left (removed by hand): release the hold itself, if still held.
		_, err = r.alloc.ReleaseIP(ctx, a.Pool, a.IP.Addr(), ipam.Handle{})
		if errors.Is(err, ipam.ErrNotFound) || errors.Is(err, ipam.ErrOwnerMismatch) {
			return ipam.Allocation{}, false
		}
	}
	if err != nil {
		log.Error(err, "Releasing the fixed IP of a deleted StatefulSet failed; retrying next pass",
			"pool", a.Pool, "ip", a.IP.Addr())
		return ipam.Allocation{}, false
	}
	r.released.Inc()
	log.Info("Released the fixed IP of a pod whose StatefulSet no longer exists", "pool", a.Pool, "ip",
		a.IP.Addr(),
		"pod", klog.KRef(h.PodNamespace, h.PodName), "statefulSet", sts)
	return a, true
}

// reclaimBuffer frees a node agent's buffered address once its Node has been
// missing for the grace period and still is, asked again. r.mu is held.
func (r *Reconciler) reclaimBuffer(ctx context.Context, key string, a ipam.Allocation,
	now time.Time) (ipam.Allocation, bool) {
	log := klog.FromContext(ctx)
	gone, err := r.nodeGone(ctx, a.Handle.Node)
	if err != nil || !gone {
		if err != nil {
			log.Error(err, "Checking the node of a buffered address failed; keeping it", "node", a.Handle.Node)
		}
		delete(r.missing, key)
		return ipam.Allocation{}, false
	}
	first, seen := r.missing[key]
	if !seen {
		r.missing[key] = now
		return ipam.Allocation{}, false
	}
	if now.Sub(first) < r.opts.GracePeriod {
		return ipam.Allocation{}, false
	}
	delete(r.missing, key)
	rel, err := r.alloc.ReleaseIP(ctx, a.Pool, a.IP.Addr(), a.Handle)
	if err != nil {
		if !errors.Is(err, ipam.ErrNotFound) && !errors.Is(err, ipam.ErrOwnerMismatch) {
			log.Error(err, "Releasing a gone node's buffered address failed; retrying next pass", "ip",
				a.IP.Addr())
		}
		return ipam.Allocation{}, false
	}
	r.released.Inc()
	log.Info("Released a buffered address of a node that no longer exists", "pool", a.Pool, "ip",
		a.IP.Addr(), "node", a.Handle.Node)
	return rel, true
}

// nodeGone asks the apiserver whether Node name is gone. An allocation that
// names no node is never judged gone.
func (r *Reconciler) nodeGone(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, nil
	}
	_, err := r.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get Node %s: %w", name, err)
	}
	return false, nil
}

// statefulSetGone asks the apiserver whether StatefulSet ns/sts and its pod are both gone.
func (r *Reconciler) statefulSetGone(ctx context.Context, ns, sts, pod string) (bool, error) {
	_, err := r.kube.AppsV1().StatefulSets(ns).Get(ctx, sts, metav1.GetOptions{})
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get StatefulSet %s/%s: %w", ns, sts, err)
	}
	_, err = r.kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err == nil {
		return false, nil // an orphaned pod of that name still runs
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get pod %s/%s: %w", ns, pod, err)
	}
	return true, nil
}

// statefulSetOf returns the StatefulSet of pod "<sts>-<ordinal>".
func statefulSetOf(pod string) (string, bool) {
	i := strings.LastIndexByte(pod, '-')
	if i <= 0 || i == len(pod)-1 {
		return "", false
	}
	for _, c := range pod[i+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return pod[:i], true
}

func (r *Reconciler) podExists(uid string) bool {
	objs, err := r.pods.GetIndexer().ByIndex(uidIndex, uid)
	return err == nil && len(objs) > 0
}

// podGoneLive asks the apiserver (not the cache) whether the pod with h's UID is gone.
func (r *Reconciler) podGoneLive(ctx context.Context, h ipam.Handle) (bool, error) {
	if h.PodName == "" || h.PodNamespace == "" {
		return false, fmt.Errorf("allocation of pod UID %s has no pod name to re-check", h.PodUID)
	}
	pod, err := r.kube.CoreV1().Pods(h.PodNamespace).Get(ctx, h.PodName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return !samePod(pod, h.PodUID), nil
}

func samePod(p *corev1.Pod, uid string) bool { return string(p.UID) == uid }
