// Package reconcile is the IPAM leak reconciler: it frees addresses whose
// pod no longer exists and whose node is gone too (a pod object can vanish
// while the pod still runs: force-deleted, or on a partitioned node; a live
// node's leaks are freed by its own agent and the runtime's CNI GC). Pods are matched by UID (the
// K8S_POD_UID the runtime
// passed at ADD time), never by name alone, so a StatefulSet pod recreated
// under the same name does not keep its predecessor's leaked address alive,
// and an address is never taken from a live pod. A pod must be missing for a
// grace period, and is then re-checked against the apiserver (not the
// informer cache) right before the release, which itself only happens if
// the address still belongs to the same container (ipam.ReleaseIP).
//
// It runs as `cni-vlan reconcile` (one replica, or several with
// --leader-elect) next to the CNI DaemonSet; CNI GC covers the node-local
// case, this covers crashed nodes and DELs that never ran.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/ipam"
)

// Name is the reconciler's name in logs and metrics.
const Name = "ipam-reconciler"

const uidIndex = "uid"

// Options tune the reconciler. Zero values take the defaults.
type Options struct {
	// Interval between two passes over the allocations (default 1m).
	Interval time.Duration
	// GracePeriod is how long a pod must be missing, and an allocation must
	// exist, before the address is released (default 5m).
	GracePeriod time.Duration
	// Pool limits the reconciler to one pool ("" = all pools).
	Pool string
	// Registry, if set, receives the reconciler's metrics.
	Registry prometheus.Registerer
	// Now is the clock (tests).
	Now func() time.Time
}

// Reconciler frees the addresses of pods that are gone. Use New, then Run.
type Reconciler struct {
	alloc    ipam.Allocator
	kube     kubernetes.Interface
	opts     Options
	factory  informers.SharedInformerFactory
	pods     cache.SharedIndexInformer
	mu       sync.Mutex
	missing  map[string]time.Time // allocation key -> first pass that found its pod missing
	released prometheus.Counter
	leaked   prometheus.Gauge
	leader   prometheus.Gauge
	waiting  prometheus.Counter
	running  bool // Run has started: this replica reconciles (it holds the Lease, or no election)
	synced   bool
}

// New returns a reconciler of alloc's allocations against the pods of kube.
func New(alloc ipam.Allocator, kube kubernetes.Interface, opts Options) (*Reconciler, error) {
	if alloc == nil || kube == nil {
		return nil, errors.New("reconcile: an allocator and a Kubernetes client are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.GracePeriod < 0 {
		return nil, fmt.Errorf("reconcile: grace period must not be negative, got %v", opts.GracePeriod)
	}
	if opts.GracePeriod == 0 {
		opts.GracePeriod = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Reconciler{alloc: alloc, kube: kube, opts: opts, missing: map[string]time.Time{},
		released: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_reconciler_released_total",
			Help: "Addresses released because their pod no longer exists."}),
		leaked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_ipam_reconciler_missing_pods",
			Help: "Allocations whose pod is missing, waiting for the grace period."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_ipam_reconciler_leader",
			Help: "1 while this replica reconciles (holds the Lease), 0 on a standby."}),
		waiting: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_reconciler_kept_for_live_node_total",
			Help: "Passes that kept a gone pod's address because its node still exists (the node frees it)."}),
	}
	if opts.Registry != nil {
		for _, c := range []prometheus.Collector{r.released, r.leaked, r.leader, r.waiting} {
			if err := opts.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("reconcile: register metrics: %w", err)
			}
		}
	}
	r.factory = informers.NewSharedInformerFactory(kube, 0)
	r.pods = r.factory.Core().V1().Pods().Informer()
	// Only identity matters here: drop spec and status to keep the cache small.
	if err := r.pods.SetTransform(func(obj any) (any, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace,
				UID: p.UID, ResourceVersion: p.ResourceVersion}}, nil
		}
		return obj, nil
	}); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	if err := r.pods.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		return []string{string(obj.(*corev1.Pod).UID)}, nil
	}}); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	return r, nil
}

// Ready is the /readyz check. The replica that reconciles is ready once its
// pod informer has synced; a standby (waiting for the Lease, with no
// informer of its own) is ready when it could take over: etcd and the
// apiserver both answer. Without this, every DaemonSet pod but the Lease
// holder's would stay unready forever.
func (r *Reconciler) Ready(ctx context.Context) error {
	r.mu.Lock()
	running, synced := r.running, r.synced
	r.mu.Unlock()
	if running {
		if !synced {
			return errors.New("pod informer not synced yet")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.alloc.Status(ctx, ""); err != nil {
		return fmt.Errorf("standby: etcd: %w", err)
	}
	if err := r.kube.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return fmt.Errorf("standby: kube-apiserver /readyz: %w", err)
	}
	return nil
}

// Run starts the pod informer and reconciles every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	log := klog.FromContext(ctx).WithValues("controller", Name)
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
	r.leader.Set(1)
	defer func() {
		r.mu.Lock()
		r.running, r.synced = false, false
		r.mu.Unlock()
		r.leader.Set(0)
	}()
	r.factory.Start(ctx.Done())
	defer r.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.pods.HasSynced) {
		return fmt.Errorf("reconcile: pod informer did not sync: %w", ctx.Err())
	}
	r.mu.Lock()
	r.synced = true
	r.mu.Unlock()
	log.Info("Reconciling IPAM allocations against pods", "interval", r.opts.Interval, "gracePeriod",
		r.opts.GracePeriod, "pool", r.opts.Pool)
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		if _, err := r.ReconcileOnce(klog.NewContext(ctx, log)); err != nil && ctx.Err() == nil {
			log.Error(err, "Reconcile pass failed; retrying at the next interval")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// HasSynced reports whether the pod informer has synced (ReconcileOnce needs it).
func (r *Reconciler) HasSynced() bool { return r.pods.HasSynced() }

// StartInformer starts the pod informer without the loop (tests, or callers with their own loop).
func (r *Reconciler) StartInformer(ctx context.Context) bool {
	r.factory.Start(ctx.Done())
	return cache.WaitForCacheSync(ctx.Done(), r.pods.HasSynced)
}
