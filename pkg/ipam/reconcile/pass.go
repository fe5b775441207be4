package reconcile

import (
	"context"
	"errors"
	"fmt"

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
		if a.Held() || h.PodUID == "" {
			// Held fixed IPs wait for their pod; no UID means not a pod we can
			// identify safely (CNI GC on its node covers it).
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
			log.V(2).Info("Pod of an allocation is missing; waiting for the grace period", "pool", a.Pool, "ip", a.IP.Addr(), "pod", klog.KRef(h.PodNamespace, h.PodName), "podUID", h.PodUID)
			continue
		}
		if now.Sub(first) < r.opts.GracePeriod {
			continue
		}
		gone, err := r.podGoneLive(ctx, h)
		if err != nil {
			log.Error(err, "Re-checking the pod failed; keeping its address", "pod", klog.KRef(h.PodNamespace, h.PodName))
			continue
		}
		if !gone {
			delete(r.missing, key)
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
			"pod", klog.KRef(h.PodNamespace, h.PodName), "podUID", h.PodUID, "container", h.ContainerID, "node", h.Node)
	}
	for k := range r.missing {
		if !seen[k] {
			delete(r.missing, k)
		}
	}
	r.leaked.Set(float64(len(r.missing)))
	return released, nil
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
