//go:build integration

package csi

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/berth-dev/berth/internal/testenv"
)

// mustVolumeID is the CSI volume ID of PV name on GlusterFS volume vol.
func mustVolumeID(vol, name string) string {
	ref, err := newVolumeRef(vol, name)
	if err != nil {
		panic(err)
	}
	return ref.ID()
}

// checkBrickOfflineEvent: with brick (named as glusterd names its pid file) of volume id's
// GlusterFS volume dead, the controller's health monitor (informers and Events against a real
// apiserver) puts a Warning Event naming the brick on the volume's PV, and none on a PV of
// another GlusterFS volume. TestBrickFailureLosesNothing kills the brick: glusterd 10.3 here
// does not restart a SIGKILLed brick on "volume start force", so one test per run kills one.
func checkBrickOfflineEvent(t *testing.T, td *testDriver, id, brick string) {
	t.Helper()
	_, cfg := testenv.StartAPIServer(t)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pv := func(name, handle string) {
		t.Helper()
		obj := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.PersistentVolumeSpec{
				Capacity:    v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")},
				AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
				PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
					Driver: Name, VolumeHandle: handle}}}}
		if _, err := client.CoreV1().PersistentVolumes().Create(ctx, obj,
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pv("pv-replicated", id)
	pv("pv-other", mustVolumeID(plainVol, "other"))

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	t.Cleanup(broadcaster.Shutdown)
	hm := newHealthMonitor(ctx, td.d, client, broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{
		Component: "csi-sharedfs"}))
	if vols := hm.Volumes(ctx); !slices.Contains(vols, replicatedVol) ||
		!slices.Contains(vols, plainVol) {
		t.Errorf("health monitor watches %v, want %s (mounted here) and %s (the default)", vols,
			replicatedVol, plainVol)
	}
	var offline v1.Event
	waitEvent := func(reason string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true,
			func(ctx context.Context) (bool, error) {
				hm.check(ctx, replicatedVol) // one poll of the health loop
				evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
					FieldSelector: "involvedObject.name=pv-replicated"})
				if err != nil {
					return false, err
				}
				for _, e := range evs.Items {
					if e.Reason == reason {
						offline = e
						return true, nil
					}
				}
				return false, nil
			})
		if err != nil {
			t.Fatalf("no %s Event on the PV: %v", reason, err)
		}
	}
	waitEvent("GlusterBrickOffline")
	evs, err := client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == "pv-other" {
			t.Errorf("Event %s on the PV of another GlusterFS volume: %s", e.Reason, e.Message)
		}
	}
	// host:/path as host-path
	named := strings.NewReplacer(":/", "-", "/", "-").Replace(offline.Message)
	if offline.Type != v1.EventTypeWarning || !strings.Contains(named, brick) {
		t.Errorf("offline Event %s %q does not name the dead brick %s", offline.Type, offline.Message,
			brick)
	}
}
