package csi

import (
	"context"
	"errors"
	"fmt"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// Provisioner turns PVCs of berth StorageClasses into PVs by calling the driver's
// CreateVolume in-process (the external-provisioner sidecar is not obtainable here).
type Provisioner struct {
	driver *Driver
	client kubernetes.Interface
}

var _ controller.Provisioner = &Provisioner{}

// NewProvisioner returns the provisioner for controller.NewProvisionController.
func NewProvisioner(d *Driver, client kubernetes.Interface) (*Provisioner, error) {
	if d == nil || !d.opts.Controller {
		return nil, errors.New("the provisioner needs a driver with the controller service")
	}
	return &Provisioner{driver: d, client: client}, nil
}

// Provision creates the PV directory and returns its PV.
func (p *Provisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (
	*v1.PersistentVolume, controller.ProvisioningState, error) {
	pvc := o.PVC
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New(
			"block volumes are not supported: use volumeMode: Filesystem")
	}
	size := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	mutable, err := p.vacParameters(ctx, pvc.Spec.VolumeAttributesClassName)
	if err != nil {
		return nil, controller.ProvisioningNoChange, err
	}
	resp, err := p.driver.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: o.PVName, Parameters: o.StorageClass.Parameters, MutableParameters: mutable,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size.Value()},
		VolumeCapabilities: capabilitiesFor(pvc.Spec.AccessModes),
	})
	if err != nil {
		if status.Code(err) == codes.InvalidArgument || status.Code(err) == codes.OutOfRange {
			return nil, controller.ProvisioningFinished, err
		}
		return nil, controller.ProvisioningInBackground, err
	}
	fs := v1.PersistentVolumeFilesystem
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName, Annotations: map[string]string{
			"pv.kubernetes.io/provisioned-by": Name}},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: *o.StorageClass.ReclaimPolicy,
			MountOptions:                  o.StorageClass.MountOptions,
			VolumeMode:                    &fs,
			VolumeAttributesClassName:     pvc.Spec.VolumeAttributesClassName,
			Capacity: v1.ResourceList{
				v1.ResourceStorage: *resource.NewQuantity(resp.GetVolume().GetCapacityBytes(),
					resource.BinarySI)},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: Name, VolumeHandle: resp.GetVolume().GetVolumeId(),
				VolumeAttributes: resp.GetVolume().GetVolumeContext(),
			}},
		},
	}
	return pv, controller.ProvisioningFinished, nil
}

// Delete removes (or archives) the PV directory of a PV this driver provisioned.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Name {
		return &controller.IgnoredError{Reason: "not a " + Name + " volume"}
	}
	_, err := p.driver.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle})
	return err
}

func (p *Provisioner) vacParameters(ctx context.Context, name *string) (map[string]string, error) {
	if name == nil || *name == "" {
		return nil, nil
	}
	vac, err := p.client.StorageV1().VolumeAttributesClasses().Get(ctx, *name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("failed to read VolumeAttributesClass %q: %w", *name, err)
	}
	if vac.DriverName != Name {
		return nil, fmt.Errorf("VolumeAttributesClass %q is for driver %q, not %q", *name, vac.DriverName,
			Name)
	}
	return vac.Parameters, nil
}

func capabilitiesFor(modes []v1.PersistentVolumeAccessMode) []*csi.VolumeCapability {
	var caps []*csi.VolumeCapability
	for _, m := range modes {
		mode := csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		switch m {
		case v1.ReadWriteOnce:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		case v1.ReadWriteOncePod:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		case v1.ReadOnlyMany:
			mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		}
		caps = append(caps, &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		})
	}
	return caps
}

// isNotFound reports a Kubernetes NotFound error.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
