package balance

import (
	"context"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	schedutil "k8s.io/kubernetes/pkg/scheduler/util"
)

// EventsToRegister names the events that can make a pod rejected by the bandwidth Filter
// schedulable, each with a QueueingHint so other events do not requeue it: a pod that held
// bandwidth goes away or asks for less, the rejected pod itself asks for less, a node is added
// or declares more capacity.
func (pl *Balance) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		{Event: fwk.ClusterEvent{Resource: fwk.Pod, ActionType: fwk.Delete | fwk.Update},
			QueueingHintFn: pl.isSchedulableAfterPodEvent},
		{Event: fwk.ClusterEvent{Resource: fwk.Node,
			ActionType: fwk.Add | fwk.UpdateNodeAllocatable | fwk.UpdateNodeLabel | fwk.UpdateNodeAnnotation},
			QueueingHintFn: pl.isSchedulableAfterNodeEvent},
	}, nil
}

// bandwidthOf is everything the Filter counts for a pod (annotation, default or extended
// resource); a terminated pod counts nothing.
func (pl *Balance) bandwidthOf(pod *v1.Pod) (int64, error) {
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return 0, nil
	}
	d, err := podDemand(pod, pl.heavyDefault)
	return d.Network, err
}

func (pl *Balance) isSchedulableAfterPodEvent(logger klog.Logger, pod *v1.Pod, oldObj,
	newObj any) (fwk.QueueingHint, error) {
	oldPod, newPod, err := schedutil.As[*v1.Pod](oldObj, newObj)
	if err != nil {
		return fwk.Queue, err
	}
	if oldPod == nil { // an add is not registered; be safe
		return fwk.Queue, nil
	}
	before, errOld := pl.bandwidthOf(oldPod)
	after := int64(0)
	if newPod != nil {
		var errNew error
		if after, errNew = pl.bandwidthOf(newPod); errNew != nil {
			// A malformed pod is no longer filtered (self) or accounted (others).
			after = 0
		}
	}
	if errOld != nil || after >= before {
		return fwk.QueueSkip, nil
	}
	if oldPod.UID == pod.UID {
		logger.V(5).Info("Pod asks for less bandwidth", "pod", klog.KObj(pod), "before", before, "after",
			after)
		return fwk.Queue, nil
	}
	if oldPod.Spec.NodeName == "" && oldPod.Status.NominatedNodeName == "" {
		return fwk.QueueSkip, nil
	}
	logger.V(5).Info("Bandwidth freed on a node", "pod", klog.KObj(pod), "by", klog.KObj(oldPod),
		"freed", before-after)
	return fwk.Queue, nil
}

func (pl *Balance) isSchedulableAfterNodeEvent(logger klog.Logger, pod *v1.Pod, oldObj,
	newObj any) (fwk.QueueingHint, error) {
	oldNode, newNode, err := schedutil.As[*v1.Node](oldObj, newObj)
	if err != nil {
		return fwk.Queue, err
	}
	want, err := pl.bandwidthOf(pod)
	if err != nil {
		return fwk.Queue, nil
	}
	capOf := func(n *v1.Node) int64 {
		declared, _, _ := nodeCapacity(n)
		c, _ := pl.netOf(nodeLoad{declared: declared}, 0)
		return c
	}
	newCap := capOf(newNode)
	if oldNode == nil {
		if float64(want) <= float64(newCap)*float64(pl.overcommit)/100 {
			logger.V(5).Info("New node has room for the pod's bandwidth", "pod", klog.KObj(pod), "node",
				klog.KObj(newNode))
			return fwk.Queue, nil
		}
		return fwk.QueueSkip, nil
	}
	if newCap > capOf(oldNode) {
		logger.V(5).Info("Node declares more bandwidth", "pod", klog.KObj(pod), "node", klog.KObj(newNode))
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}
