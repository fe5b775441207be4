package agent

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/ipam"
)

// reclaim frees this node's addresses whose attachment no longer exists on
// the node (the pod's host veth is gone): the node itself knows them unused.
// This is what frees a leak on a live node when the runtime never calls CNI
// GC (CNI 1.0.0 runtimes) and a DEL never ran; the cluster reconciler frees
// only the addresses of nodes that are gone. Only networks this agent serves
// are judged (another plugin's attachments have no cni-vlan veth), and no
// pool berth-ipam allocates from for another main plugin.
func (a *Agent) reclaim(ctx context.Context) {
	if a.opts.AttachmentPresent == nil {
		return
	}
	a.mu.Lock()
	networks, pools := map[string]bool{}, []string{}
	for name, p := range a.st.Pools {
		if p.Foreign {
			continue
		}
		networks[p.Network] = true
		pools = append(pools, name)
	}
	a.mu.Unlock()
	log := klog.FromContext(ctx)
	for _, pool := range pools {
		lctx, cancel := context.WithTimeout(ctx, 4*a.opts.CallTimeout)
		all, err := a.alloc.ListAllocations(lctx, pool)
		cancel()
		a.answered(ctx, err)
		if err != nil {
			return
		}
		for _, al := range all {
			h := al.Handle
			if h.Node != a.opts.Node || h.IsBuffer() || al.Held() || !networks[h.Network] ||
				time.Since(al.AllocatedAt) < a.opts.ReclaimGrace {
				continue
			}
			if a.pendingRelease(h) {
				continue // the journal releases it
			}
			present, err := a.opts.AttachmentPresent(h.ContainerID, h.IfName)
			if err != nil || present {
				continue
			}
			rctx, cancel := a.etcdCtx(ctx)
			_, err = a.alloc.ReleaseIP(rctx, pool, al.IP.Addr(), h)
			cancel()
			a.answered(ctx, err)
			if err != nil {
				if !errors.Is(err, ipam.ErrNotFound) && !errors.Is(err, ipam.ErrOwnerMismatch) {
					log.V(2).Info("Could not free the address of a gone attachment", "ip", al.IP.Addr(), "err", err)
				}
				continue
			}
			a.m.reclaimed.Inc()
			log.Info("Freed the address of an attachment that no longer exists on this node", "pool", pool,
				"ip", al.IP.Addr(),
				"pod", klog.KRef(h.PodNamespace, h.PodName), "container", h.ContainerID)
		}
	}
}

func (a *Agent) pendingRelease(h ipam.Handle) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.st.Pending {
		if o.Kind == opRelease && o.Handle.Same(h) {
			return true
		}
	}
	return false
}
