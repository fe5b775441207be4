package balance

import (
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// netCache keeps, per node, its network capacity and the bandwidth of annotated pods on it,
// including pods assumed by Reserve but not bound yet. The scheduler's NodeInfo already tracks
// CPU, memory and the extended bandwidth resource; only annotation-based bandwidth lives here.
// Score reads it under a read lock without allocating.
type netCache struct {
	mu    sync.RWMutex
	nodes map[string]*nodeNet
	pods  map[types.UID]podNet
	// defCap is the capacity of nodes that declare none.
	defCap int64
	logger klog.Logger
}

type nodeNet struct {
	// node is the object the capacity was parsed from; a new object means re-parse.
	node     *v1.Node
	capacity int64
	// annotated is the sum of annotation bandwidth of bound and assumed pods.
	annotated int64
}

type podNet struct {
	node      string
	bandwidth int64
	assumed   bool
}

func newNetCache(defCap int64, logger klog.Logger) *netCache {
	return &netCache{nodes: map[string]*nodeNet{}, pods: map[types.UID]podNet{}, defCap: defCap, logger: logger}
}

// get returns a node's capacity and annotated bandwidth. It parses the node only when the object
// changed, so the steady state allocates nothing.
func (c *netCache) get(node *v1.Node) (capacity, used int64) {
	c.mu.RLock()
	n := c.nodes[node.Name]
	if n != nil && n.node == node {
		capacity, used = n.capacity, n.annotated
		c.mu.RUnlock()
		return capacity, used
	}
	c.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	n = c.entry(node.Name)
	if n.node != node {
		cp, err := nodeCapacity(node, c.defCap)
		if err != nil {
			c.logger.Info("Malformed node bandwidth, using the default", "node", klog.KObj(node), "err", err)
		}
		n.node, n.capacity = node, cp
	}
	return n.capacity, n.annotated
}

// entry returns the node's record, creating it; call with mu held for writing.
func (c *netCache) entry(name string) *nodeNet {
	n := c.nodes[name]
	if n == nil {
		n = &nodeNet{capacity: c.defCap}
		c.nodes[name] = n
	}
	return n
}

// set records that pod uid uses bandwidth on node; an earlier record is replaced.
func (c *netCache) set(uid types.UID, node string, bandwidth int64, assumed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(uid)
	if bandwidth <= 0 || node == "" {
		return
	}
	c.pods[uid] = podNet{node: node, bandwidth: bandwidth, assumed: assumed}
	c.entry(node).annotated += bandwidth
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
	if n := c.nodes[p.node]; n != nil {
		n.annotated -= p.bandwidth
	}
}

func (c *netCache) deleteNode(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, name)
}

// podHandler keeps the cache in step with bound pods.
func (c *netCache) podHandler(heavyDefault int64) cache.ResourceEventHandler {
	update := func(obj any) {
		pod, ok := obj.(*v1.Pod)
		if !ok {
			return
		}
		if pod.Spec.NodeName == "" {
			return
		}
		if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
			c.forget(pod.UID, false)
			return
		}
		d, err := podDemand(pod, heavyDefault)
		if err != nil {
			// Already logged when it was scheduled; count it as using nothing.
			d = Demand{}
		}
		c.set(pod.UID, pod.Spec.NodeName, d.cacheBandwidth(), false)
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
