//go:build integration

package csi

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestProvisionResizeDelete drives PVC → CreateVolume → PV, a larger request → live quota
// raise, and PV release → DeleteVolume through a real kube-apiserver. No kube-controller-manager
// runs, so the test binds the claim itself as the PV controller would.
func TestProvisionResizeDelete(t *testing.T) {
	td := startDriver(t)
	_, cfg := testenv.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	p, err := NewProvisioner(td.d, client)
	if err != nil {
		t.Fatal(err)
	}
	pc := controller.NewProvisionController(ctx, client, Name, p, controller.LeaderElection(false))
	go pc.Run(ctx)
	go func() { _ = NewResizer(td.d, client, record.NewFakeRecorder(100)).Run(ctx) }()

	del := v1.PersistentVolumeReclaimDelete
	expand := true
	if _, err := client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-shared"}, Provisioner: Name, ReclaimPolicy: &del,
		AllowVolumeExpansion: &expand, Parameters: map[string]string{ParamGlusterVolume: plainVol},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sc := "berth-shared"
	pvc, err := client.CoreV1().PersistentVolumeClaims("default").Create(ctx,
		&v1.PersistentVolumeClaim{
			// The PV controller (kube-controller-manager) sets this annotation; none runs here.
			ObjectMeta: metav1.ObjectMeta{Name: "data", Annotations: map[string]string{
				"volume.kubernetes.io/storage-provisioner": Name}},
			Spec: v1.PersistentVolumeClaimSpec{StorageClassName: &sc,
				AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{
					v1.ResourceStorage: resource.MustParse("16Mi")}}},
		}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvName := "pvc-" + string(pvc.UID)
	var pv *v1.PersistentVolume
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			pv, err = client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
			return err == nil, nil
		}); err != nil {
		t.Fatalf("no PV %s provisioned for the PVC: %v", pvName, err)
	}
	ref, err := parseVolumeID(pv.Spec.CSI.VolumeHandle)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(td.d.glusterMountPath(plainVol), ref.RelDir())
	if m, err := readMeta(dir); err != nil || m.CapacityBytes != 16<<20 {
		t.Fatalf("PV directory %s: meta %+v, err %v; want 16 MiB", dir, m, err)
	}

	// Bind as the PV controller would, then ask for more.
	pvc.Spec.VolumeName = pvName
	if pvc, err = client.CoreV1().PersistentVolumeClaims("default").Update(ctx, pvc,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc.Status.Phase = v1.ClaimBound
	pvc.Status.Capacity = v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")}
	if pvc, err = client.CoreV1().PersistentVolumeClaims("default").UpdateStatus(ctx, pvc,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("32Mi")
	if _, err = client.CoreV1().PersistentVolumeClaims("default").Update(ctx, pvc,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			m, err := readMeta(dir)
			return err == nil && m.CapacityBytes == 32<<20, nil
		}); err != nil {
		t.Fatalf("the quota was not raised to 32 MiB after the PVC asked for it")
	}

	// Release: the provisioner deletes the directory.
	pv, _ = client.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	pv.Status.Phase = v1.VolumeReleased
	if _, err := client.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) {
			_, err := os.Stat(dir)
			return os.IsNotExist(err), nil
		}); err != nil {
		t.Fatalf("PV directory %s still exists after the PV was released", dir)
	}
}
