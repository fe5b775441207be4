package balance

import (
	"fmt"
	"math"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// netCache keeps, per node, its declared network capacity and the bandwidth of annotated pods on
// it, including pods assumed by Reserve but not bound yet. The scheduler's NodeInfo already tracks
// CPU, memory and the extended bandwidth resource; only annotation-based bandwidth lives here.
// One cache serves every profile of a scheduler (see caches), so it stores nothing that depends
// on a profile's args: capacity 0 means "use your defaultNodeBandwidth", and network-profile pods
// without a bandwidth are counted, not summed.
type netCache struct {
	mu     sync.RWMutex
	nodes  map[string]*nodeNet
	pods   map[types.UID]podNet
	logger klog.Logger
}

type nodeNet struct {
	// node is the object the capacity was parsed from; a new object means re-parse.
	node *v1.Node
	nodeLoad
	// badRaw is the malformed value last logged, so a node status update every few seconds
	// does not repeat the same log line.
	badRaw string
	// pods counts the pod records on the node; a deleted node's record lives while it has pods,
	// like the scheduler's own cache, so their later deletion cannot drive a re-added node negative.
	pods int
}

// nodeLoad is what the plugin reads about one node.
type nodeLoad struct {
	// declared is the node's capacity in bit/s, 0 when it declares none (or a malformed one).
	declared int64
	// annotated is the sum of annotation bandwidth of bound and assumed pods.
	annotated int64
	// heavy counts network-profile pods that declare no bandwidth.
	heavy int64
}

type podNet struct {
	node      string
	bandwidth int64
	heavy     bool
	assumed   bool
}

func newNetCache(logger klog.Logger) *netCache {
	return &netCache{nodes: map[string]*nodeNet{}, pods: map[types.UID]podNet{}, logger: logger}
}

// caches holds one cache per informer factory, i.e. per scheduler instance: all profiles of a
// scheduler share it, so a pod reserved by one profile counts for the others. One caches belongs
// to one plugin factory (NewFactory), so two schedulers in one process built from two registries
// share nothing; entries are never dropped, a scheduler has one informer factory.
type caches struct {
	mu sync.Mutex
	m  map[informers.SharedInformerFactory]*netCache
}

// cacheFor returns the factory's cache, creating it and its event handlers on first use.
func (cs *caches) cacheFor(f informers.SharedInformerFactory, logger klog.Logger) (*netCache, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c := cs.m[f]; c != nil {
		return c, nil
	}
	c := newNetCache(logger)
	if _, err := f.Core().V1().Pods().Informer().AddEventHandler(c.podHandler()); err != nil {
		return nil, fmt.Errorf("failed to watch pods for bandwidth accounting: %w", err)
	}
	if _, err := f.Core().V1().Nodes().Informer().AddEventHandler(c.nodeHandler()); err != nil {
		return nil, fmt.Errorf("failed to watch nodes for bandwidth accounting: %w", err)
	}
	cs.m[f] = c
	return c, nil
}

// get returns a node's load. It parses the node only when the object changed, so the steady
// state allocates nothing.
func (c *netCache) get(node *v1.Node) nodeLoad {
	c.mu.RLock()
	n := c.nodes[node.Name]
	if n != nil && n.node == node {
		l := n.nodeLoad
		c.mu.RUnlock()
		return l
	}
	c.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.parseLocked(node)
}

// snapshot stores the load of every node into out, and into loads in the order of nodes
// (len(loads) == len(nodes)), under one read lock (PreScore), so that Score reads it without
// locking.
func (c *netCache) snapshot(nodes []fwk.NodeInfo, out map[string]nodeLoad, loads []nodeLoad) {
	stale := false
	c.mu.RLock()
	for i, ni := range nodes {
		node := ni.Node()
		if node == nil {
			continue
		}
		if n := c.nodes[node.Name]; n != nil && n.node == node {
			out[node.Name], loads[i] = n.nodeLoad, n.nodeLoad
		} else {
			stale = true
		}
	}
	c.mu.RUnlock()
	if !stale {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ni := range nodes {
		if node := ni.Node(); node != nil {
			if _, ok := out[node.Name]; !ok {
				out[node.Name] = c.parseLocked(node)
			}
			loads[i] = out[node.Name]
		}
	}
}

// parseLocked refreshes the node's capacity if the object changed; call with mu held for writing.
func (c *netCache) parseLocked(node *v1.Node) nodeLoad {
	n := c.entry(node.Name)
	if n.node != node {
		declared, raw, err := nodeCapacity(node)
		switch {
		case err == nil:
			n.badRaw = ""
		case raw != n.badRaw:
			c.logger.Info("Malformed node bandwidth, using defaultNodeBandwidth", "node", klog.KObj(node),
				"err", err)
			n.badRaw = raw
		}
		n.node, n.declared = node, declared
	}
	return n.nodeLoad
}

// entry returns the node's record, creating it; call with mu held for writing.
func (c *netCache) entry(name string) *nodeNet {
	n := c.nodes[name]
	if n == nil {
		n = &nodeNet{}
		c.nodes[name] = n
	}
	return n
}

// set records the pod's bandwidth; an earlier record of uid is replaced.
func (c *netCache) set(uid types.UID, p podNet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(uid)
	if (p.bandwidth <= 0 && !p.heavy) || p.node == "" {
		return
	}
	c.pods[uid] = p
	n := c.entry(p.node)
	n.pods++
	n.annotated = satAdd(n.annotated, p.bandwidth)
	if p.heavy {
		n.heavy++
	}
}

// forget drops pod uid. With onlyAssumed it keeps a pod the informer already saw bound, so an
// Unreserve racing with the bind event cannot undo real usage.
func (c *netCache) forget(uid types.UID, onlyAssumed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pods[uid]; ok && (!onlyAssumed || p.assumed) {
		c.removeLocked(uid)
	}
}

func (c *netCache) removeLocked(uid types.UID) {
	p, ok := c.pods[uid]
	if !ok {
		return
	}
	delete(c.pods, uid)
	n := c.nodes[p.node]
	if n == nil {
		return
	}
	n.pods--
	// max(0, …) because a saturated sum no longer knows its true value.
	n.annotated = max(0, n.annotated-p.bandwidth)
	if p.heavy {
		n.heavy--
	}
	if n.pods == 0 {
		n.annotated, n.heavy = 0, 0
		if n.node == nil {
			delete(c.nodes, p.node)
		}
	}
}

// deleteNode forgets the node object; its pods keep counting until they are deleted.
func (c *netCache) deleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	if n == nil {
		return
	}
	if n.pods == 0 {
		delete(c.nodes, name)
		return
	}
	n.node, n.declared, n.badRaw = nil, 0, ""
}

// podRecord is what the cache counts for a pod on its node; ok is false for a pod that
// finished (Succeeded or Failed), which counts nothing. A malformed annotation was logged when
// the pod was scheduled and counts as using nothing.
func podRecord(pod *v1.Pod) (rec podNet, ok bool) {
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return podNet{}, false
	}
	d, err := podDemand(pod, 0)
	if err != nil {
		d = Demand{}
	}
	return d.podNet(pod.Spec.NodeName, false), true
}

// podHandler keeps the cache in step with bound pods.
func (c *netCache) podHandler() cache.ResourceEventHandler {
	update := func(obj any) {
		pod, ok := obj.(*v1.Pod)
		if !ok {
			return
		}
		if pod.Spec.NodeName == "" {
			return
		}
		if rec, ok := podRecord(pod); ok {
			c.set(pod.UID, rec)
		} else {
			c.forget(pod.UID, false)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				c.forget(pod.UID, false)
			}
		},
	}
}

// nodeHandler drops deleted nodes.
func (c *netCache) nodeHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if node, ok := obj.(*v1.Node); ok {
				c.deleteNode(node.Name)
			}
		},
	}
}

// satAdd adds non-negative a and b, saturating at MaxInt64 instead of wrapping.
func satAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// satMul multiplies non-negative a and b, saturating at MaxInt64.
func satMul(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}
