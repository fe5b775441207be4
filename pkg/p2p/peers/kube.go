package peers

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Kube discovers peers from the pods of the p2p-puller DaemonSet: every
// running, ready pod with the selector's labels in the namespace is a peer,
// reachable at its pod IP (the node IP: the DaemonSet uses hostNetwork) on
// the peer port. Only list/watch on pods in one namespace is needed.
type Kube struct {
	self     Peer
	port     int
	lister   func() ([]*corev1.Pod, error)
	mu       sync.RWMutex
	peers    []Peer
	synced   bool
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
}

var _ Discovery = &Kube{}

// NewKube returns a discovery over pods matching selector in namespace.
// self is always part of the peer set, even before its own pod is ready.
func NewKube(client kubernetes.Interface, namespace, selector string, port int, self Peer) (*Kube,
	error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("invalid peer label selector %q: %w", selector, err)
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }))
	inf := f.Core().V1().Pods()
	k := &Kube{self: self, port: port, peers: []Peer{self}, factory: f, informer: inf.Informer()}
	k.lister = func() ([]*corev1.Pod, error) { return inf.Lister().Pods(namespace).List(sel) }
	_, err = k.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.refresh() },
		UpdateFunc: func(any, any) { k.refresh() },
		DeleteFunc: func(any) { k.refresh() },
	})
	if err != nil {
		return nil, fmt.Errorf("failed to watch p2p-puller pods: %w", err)
	}
	return k, nil
}

// Run watches pods until ctx is done. It returns once the cache has synced
// (or failed to), leaving the watch running in the background.
func (k *Kube) Run(ctx context.Context) error {
	k.factory.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), k.informer.HasSynced) {
		return fmt.Errorf("failed to list p2p-puller pods within 60s: check the RBAC of the p2p-puller " +
			"ServiceAccount (list/watch pods)")
	}
	k.refresh()
	return nil
}

// Peers returns ready peer pods plus self, sorted by name.
func (k *Kube) Peers() []Peer {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.peers
}

func (k *Kube) refresh() {
	pods, err := k.lister()
	if err != nil {
		klog.ErrorS(err, "Failed to list p2p-puller pods")
		return
	}
	out := []Peer{k.self}
	for _, p := range pods {
		if p.Spec.NodeName == k.self.Name || p.Status.PodIP == "" || p.DeletionTimestamp != nil ||
			!podReady(p) {
			continue
		}
		out = append(out, Peer{Name: p.Spec.NodeName,
			Addr: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(k.port))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	k.mu.Lock()
	if len(out) != len(k.peers) {
		klog.InfoS("Peer set changed", "peers", len(out))
	}
	k.peers = out
	k.synced = true
	k.mu.Unlock()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
