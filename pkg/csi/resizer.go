package csi

import (
	"context"
	"fmt"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Resizer expands (ControllerExpandVolume) and modifies (ControllerModifyVolume) bound berth
// volumes when their PVC asks for more storage or another VolumeAttributesClass: the job of
// the external-resizer sidecar, which is not obtainable here.
type Resizer struct {
	driver   *Driver
	client   kubernetes.Interface
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
	factory  informers.SharedInformerFactory
}

// NewResizer watches PVCs in every namespace.
func NewResizer(d *Driver, client kubernetes.Interface, recorder record.EventRecorder) *Resizer {
	r := &Resizer{driver: d, client: client, recorder: recorder,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.DefaultTypedControllerRateLimiter[string]()),
		factory: informers.NewSharedInformerFactory(client, 5*time.Minute)}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	_, _ = r.factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(
		cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) },
		}) // the registration handle is only needed to remove the handler
	return r
}

// Run processes PVC changes until ctx ends.
func (r *Resizer) Run(ctx context.Context) error {
	defer r.queue.ShutDown()
	r.factory.Start(ctx.Done())
	r.factory.WaitForCacheSync(ctx.Done())
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for r.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}

func (r *Resizer) next(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.sync(ctx, key); err != nil {
		klog.FromContext(ctx).Error(err, "failed to resize or modify volume", "pvc", key)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

func (r *Resizer) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	pvc, err := r.factory.Core().V1().PersistentVolumeClaims().Lister().PersistentVolumeClaims(ns).Get(
		name)
	if isNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if pvc.Status.Phase != v1.ClaimBound || pvc.Spec.VolumeName == "" {
		return nil
	}
	pv, err := r.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read PV %q: %w", pvc.Spec.VolumeName, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Name {
		return nil
	}
	if err := r.expand(ctx, pvc.DeepCopy(), pv.DeepCopy()); err != nil {
		return err
	}
	return r.modify(ctx, pvc.DeepCopy(), pv.Name)
}

func (r *Resizer) expand(ctx context.Context, pvc *v1.PersistentVolumeClaim,
	pv *v1.PersistentVolume) error {
	want := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	have := pv.Spec.Capacity[v1.ResourceStorage]
	if want.Cmp(have) > 0 {
		resp, err := r.driver.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
			VolumeId: pv.Spec.CSI.VolumeHandle, CapacityRange: &csi.CapacityRange{
				RequiredBytes: want.Value()}})
		if err != nil {
			r.recorder.Eventf(pvc, v1.EventTypeWarning, "VolumeResizeFailed", "expanding to %s failed: %v",
				want.String(), err)
			return err
		}
		pv.Spec.Capacity[v1.ResourceStorage] = want
		if _, err := r.client.CoreV1().PersistentVolumes().Update(ctx, pv,
			metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("failed to update capacity of PV %q: %w", pv.Name, err)
		}
		klog.FromContext(ctx).Info("volume expanded", "pvc", klog.KObj(pvc),
			"capacity", resp.GetCapacityBytes())
		r.recorder.Eventf(pvc, v1.EventTypeNormal, "VolumeResizeSuccessful", "quota raised live to %s",
			want.String())
	}
	st := pvc.Status.Capacity[v1.ResourceStorage]
	if st.Cmp(pv.Spec.Capacity[v1.ResourceStorage]) < 0 {
		if pvc.Status.Capacity == nil {
			pvc.Status.Capacity = v1.ResourceList{}
		}
		pvc.Status.Capacity[v1.ResourceStorage] = pv.Spec.Capacity[v1.ResourceStorage]
		if _, err := r.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc,
			metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("failed to update capacity of PVC %s: %w", klog.KObj(pvc), err)
		}
	}
	return nil
}

func (r *Resizer) modify(ctx context.Context, pvc *v1.PersistentVolumeClaim, pvName string) error {
	want := pvc.Spec.VolumeAttributesClassName
	if want == nil || *want == "" || (pvc.Status.CurrentVolumeAttributesClassName != nil &&
		*pvc.Status.CurrentVolumeAttributesClassName == *want) {
		return nil
	}
	// Read again: expand may have just updated the PV, and an older copy would conflict.
	pv, err := r.client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read PV %q: %w", pvName, err)
	}
	params, err := (&Provisioner{driver: r.driver, client: r.client}).vacParameters(ctx, want)
	if err != nil {
		return err
	}
	_, _, before, lookupErr := r.driver.lookupVolume(ctx, pv.Spec.CSI.VolumeHandle)
	if _, err := r.driver.ControllerModifyVolume(ctx, &csi.ControllerModifyVolumeRequest{
		VolumeId: pv.Spec.CSI.VolumeHandle, MutableParameters: params}); err != nil {
		r.recorder.Eventf(pvc, v1.EventTypeWarning, "VolumeModifyFailed",
			"applying VolumeAttributesClass %q failed: %v", *want, err)
		return err
	}
	pv.Spec.VolumeAttributesClassName = want
	if _, err := r.client.CoreV1().PersistentVolumes().Update(ctx, pv,
		metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("failed to update PV %q: %w", pv.Name, err)
	}
	pvc.Status.CurrentVolumeAttributesClassName = want
	pvc.Status.ModifyVolumeStatus = nil
	if _, err := r.client.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc,
		metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("failed to update PVC %s: %w", klog.KObj(pvc), err)
	}
	if lookupErr == nil && limitsNeedRemount(before, params) {
		r.recorder.Eventf(pvc, v1.EventTypeWarning, "VolumeModifyPending",
			"IO limits of VolumeAttributesClass %q are recorded, but pods running now use the volume as a "+
				"plain bind mount without limits: the limits apply on the next pod start", *want)
		return nil
	}
	r.recorder.Eventf(pvc, v1.EventTypeNormal, "VolumeModifySuccessful",
		"IO limits of VolumeAttributesClass %q applied", *want)
	return nil
}

// limitsNeedRemount reports whether new mutable parameters put limits on a volume that had
// neither limits nor statistics: its running pods have a plain bind mount, which no node
// can throttle until the volume is published again.
func limitsNeedRemount(before *volumeMeta, params map[string]string) bool {
	if before.Limits.Limited() || before.Statistics {
		return false
	}
	after := before.Limits
	if err := parseMutableParams(params, &after); err != nil {
		return false
	}
	return after.Limited()
}
