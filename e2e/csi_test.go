//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestCSISharedStorage: with manifests/csi installed and a GlusterFS volume "berth" in the
// cluster, an RWX PVC is provisioned and bound, two pods share its files, the capacity quota
// stops a writer with "Disk quota exceeded", a 20 MiB/s write limit holds inside a pod, and
// deleting the PVC removes its PV.
func TestCSISharedStorage(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("csi")

	shared := createPVC(f, "shared", "berth-shared", "16Mi")
	limited := createPVC(f, "limited", "berth-shared-limited", "256Mi")
	for _, n := range []string{"writer", "reader"} {
		sharePod(f, n, shared)
	}
	sharePod(f, "limited", limited)
	f.WaitPodsReady("e2e=csi", 3, 3*time.Minute)

	mustExec(f, "writer", "sh", "-c", "echo hello-from-writer > /data/greeting")
	if out := mustExec(f, "reader", "cat", "/data/greeting"); strings.TrimSpace(out) != "hello-from-writer" {
		t.Fatalf("reader sees %q in the shared volume, want the writer's greeting", out)
	}

	_, stderr, err := f.Exec("writer", "app", "sh", "-c", "busybox dd if=/dev/zero of=/data/big bs=1M count=64 conv=fsync")
	if err == nil || !strings.Contains(stderr, "quota") {
		t.Fatalf("writing 64 MiB into a 16 MiB volume: err %v, stderr %q; want \"Disk quota exceeded\"", err, stderr)
	}

	// Timed from here: the exec round trip only makes the measured rate lower, never higher.
	begin := time.Now()
	mustExec(f, "limited", "sh", "-c", "dd if=/dev/zero of=/data/x bs=1M count=80 conv=fsync 2>/dev/null")
	rate := 80.0 / time.Since(begin).Seconds()
	t.Logf("80 MiB written at %.1f MiB/s under a 20 MiB/s limit", rate)
	if rate > 20*1.3 { // an idle volume may burst half a second's worth
		t.Errorf("write rate %.1f MiB/s exceeds the 20 MiB/s limit", rate)
	}

	for _, p := range []string{"writer", "reader"} {
		_ = f.Client.CoreV1().Pods(f.Namespace).Delete(f.Context(), p,
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}
	deleteClaimWaitPV(f, shared, 3*time.Minute)
}

func createPVC(f *framework.Framework, name, class, size string) string {
	f.T.Helper()
	_, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Create(f.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class,
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse(size)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		f.T.Fatalf("create PVC %s: %v", name, err)
	}
	f.WaitFor("PVC "+name+" to be bound", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.ClaimBound, err
	})
	return name
}

func sharePod(f *framework.Framework, name, claim string) {
	f.T.Helper()
	_, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"e2e": "csi"}},
		Spec:       claimPodSpec(claim),
	}, metav1.CreateOptions{})
	if err != nil {
		f.T.Fatalf("create pod %s: %v", name, err)
	}
}

// claimPodSpec is a busybox container that sleeps, with claim mounted at /data.
func claimPodSpec(claim string) corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](0),
		Containers: []corev1.Container{{Name: "app", Image: framework.Image("echo"),
			Command:      []string{"/bin/sh", "-c", "sleep 3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
	}
}

func mustExec(f *framework.Framework, pod string, cmd ...string) string {
	f.T.Helper()
	out, stderr, err := f.Exec(pod, "app", cmd...)
	if err != nil {
		f.T.Fatalf("exec %v in %s: %v (stderr %q)", cmd, pod, err, stderr)
	}
	return out
}
