package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// fuzzKeys are the annotation keys the fuzz test sets, one fuzzed string each,
// in the order of FuzzParseAndMutate's arguments. TestFuzzCoversAllKeys keeps
// it in step with KnownKeys.
var fuzzKeys = []string{
	AnnoContainer, AnnoPreStart, AnnoPreStartAttempts, AnnoPreStartBackoff, AnnoPreStartDeadline,
	AnnoPreOnline, AnnoCheckURL, AnnoOnlineMarker, AnnoDrain, AnnoVolumes,
	AnnoDebug, AnnoDebugPort, AnnoDebugProxyPort, AnnoShell, AnnoStatus,
	AnnoHookResources, AnnoAfter, AnnoAfterReady, AnnoAfterTimeout,
}

func TestFuzzCoversAllKeys(t *testing.T) {
	t.Parallel()
	if got, want := strings.Join(fuzzKeys, ","), KnownKeys(); len(fuzzKeys) != len(want) {
		t.Fatalf("FuzzParseAndMutate sets %s; the webhook knows %v: add the new key to fuzzKeys and the "+
			"fuzz arguments", got, want)
	}
	seen := map[string]bool{}
	for _, k := range fuzzKeys {
		seen[k] = true
	}
	for _, k := range KnownKeys() {
		if !seen[k] {
			t.Errorf("key %s is not fuzzed", k)
		}
	}
}

// FuzzParseAndMutate: whatever the annotations and the pod, the handler
// answers with a denial naming what is wrong, or a patch that yields a pod the
// apiserver accepts (unique volume and container names, unique mount paths
// per container, mounts of existing volumes) and that re-admission leaves
// alone; it never panics or errors. Run longer with
//
//	go test ./pkg/webhook -run '^$' -fuzz FuzzParseAndMutate -fuzztime 60s
//
// The seeds below run as a plain unit test.
func FuzzParseAndMutate(f *testing.F) {
	seeds := []struct {
		annos map[string]string
		shape uint8
	}{
		{map[string]string{AnnoPreStart: "inline:echo hi"}, 0},
		{map[string]string{AnnoPreOnline: "none"}, 0},
		{map[string]string{AnnoPreStart: "file:/app/pre.sh", AnnoPreOnline: "configmap:hooks/warm.sh",
			AnnoCheckURL: ":8080/check", AnnoDebug: "java", AnnoVolumes: "a=emptydir:/a, b=pvc/c:/b:ro",
			AnnoDrain: "10s"}, 0},
		{map[string]string{AnnoPreStart: "configmap:x/y", AnnoPreOnline: "inline:x",
			AnnoCheckURL: "http://localhost:1/", AnnoDebug: "port", AnnoVolumes: "a=emptydir:/a:rw",
			AnnoDrain: "0s"}, 0},
		{map[string]string{AnnoPreStart: "inline:", AnnoPreOnline: "bad",
			AnnoCheckURL: "http://[::1]:99999/", AnnoDebug: "java", AnnoVolumes: ",,,", AnnoDrain: "-1s"}, 0},
		{map[string]string{AnnoPreStart: "inline:x", AnnoPreOnline: "none",
			AnnoCheckURL: "https://127.0.0.1:0", AnnoDebug: "port", AnnoVolumes: "a=pvc/:/x",
			AnnoDrain: "9999h"}, 0},
		{map[string]string{AnnoPreStart: "\x00", AnnoPreOnline: "\xff", AnnoCheckURL: "::",
			AnnoDebug: "JAVA", AnnoVolumes: "=:", AnnoDrain: "1e9s"}, 0},
		{map[string]string{AnnoPreOnline: "inline:warm", AnnoOnlineMarker: "/tmp/ok",
			AnnoShell: "/bin/bash", AnnoContainer: "side"}, 0x1 | 0x10},
		{map[string]string{AnnoPreStart: "inline:x", AnnoPreStartAttempts: "5", AnnoPreStartBackoff: "1s",
			AnnoPreStartDeadline: "1m", AnnoVolumes: "d=emptydir:/data"}, 0x2},
		{map[string]string{AnnoPreOnline: "none", AnnoDrain: "3s", AnnoDebug: "port",
			AnnoDebugPort: "9229", AnnoDebugProxyPort: "15106"}, 0x4 | 0x8 | 0x20},
		{map[string]string{AnnoDebug: "java", AnnoStatus: `{"containers":["berth-sidecar"]}`}, 0},
		{map[string]string{AnnoVolumes: "x=emptydir:/berth/online", AnnoPreOnline: "none"}, 0x40},
		{map[string]string{AnnoPreStart: "inline:pip install x",
			AnnoHookResources: "cpu=500m,memory=256Mi"}, 0},
		{map[string]string{AnnoDebug: "port", AnnoHookResources: "memory=1Mi"}, 0},
		{map[string]string{AnnoAfter: "db, cache", AnnoAfterReady: "2", AnnoAfterTimeout: "5m"}, 0},
		{map[string]string{AnnoAfter: "db,db", AnnoPreStart: "inline:x"}, 0},
		{map[string]string{AnnoAfter: "kube-system/dns,other/x,,", AnnoAfterReady: "0"}, 0},
		{map[string]string{AnnoAfter: "Db/-x", AnnoAfterTimeout: "25h", AnnoDebug: "java"}, 0},
	}
	for _, s := range seeds {
		f.Add(s.shape, s.annos[fuzzKeys[0]], s.annos[fuzzKeys[1]], s.annos[fuzzKeys[2]],
			s.annos[fuzzKeys[3]], s.annos[fuzzKeys[4]],
			s.annos[fuzzKeys[5]], s.annos[fuzzKeys[6]], s.annos[fuzzKeys[7]], s.annos[fuzzKeys[8]],
			s.annos[fuzzKeys[9]],
			s.annos[fuzzKeys[10]], s.annos[fuzzKeys[11]], s.annos[fuzzKeys[12]], s.annos[fuzzKeys[13]],
			s.annos[fuzzKeys[14]], s.annos[fuzzKeys[15]],
			s.annos[fuzzKeys[16]], s.annos[fuzzKeys[17]], s.annos[fuzzKeys[18]])
	}
	h := newTestHandler(f)
	f.Fuzz(func(t *testing.T, shape uint8, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13,
		v14, v15, v16, v17, v18 string) {
		annos := map[string]string{}
		for i, v := range []string{v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15,
			v16, v17, v18} {
			if v != "" {
				annos[fuzzKeys[i]] = v
			}
		}
		// ParseAnnotations alone: only *AnnotationErrors.
		if _, err := ParseAnnotations(annos); err != nil {
			if _, ok := err.(*AnnotationError); !ok {
				t.Fatalf("parse error is not an *AnnotationError: %T %v", err, err)
			}
		}
		pod := fuzzPodShape(shape)
		pod.Annotations = annos
		raw, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		resp := h.Handle(t.Context(), request("apps", raw))
		if !resp.Allowed {
			if resp.Result == nil || resp.Result.Code != http.StatusForbidden ||
				!strings.HasPrefix(resp.Result.Message, "berth: ") || len(resp.Result.Message) < 20 {
				t.Fatalf("want a 403 denial with a message, got %+v", resp.Result)
			}
			return
		}
		if len(resp.Patches) == 0 {
			return
		}
		var out corev1.Pod
		mutated := applyPatch(t, raw, resp)
		if err := json.Unmarshal(mutated, &out); err != nil {
			t.Fatal(err)
		}
		if err := uniqueNamesAndMounts(&out); err != nil {
			t.Fatalf("the mutated pod would be refused by the apiserver: %v\nannotations: %q", err, annos)
		}
		if again := h.Handle(t.Context(), request("apps", mutated)); !again.Allowed ||
			len(again.Patches) != 0 {
			t.Fatalf("re-admission changed the pod again: allowed=%v patches=%v", again.Allowed, again.Patches)
		}
	})
}

// fuzzPod is a plain one-container app pod.
func fuzzPod() *corev1.Pod { return fuzzPodShape(0) }

// fuzzPodShape varies the pod by the bits of shape: 0x1 the app mounts /tmp,
// 0x2 /data, 0x4 a 5s grace period, 0x8 a readiness probe, 0x10 a second
// container "side", 0x20 an exec liveness probe, 0x40 the app mounts /berth/online.
func fuzzPodShape(shape uint8) *corev1.Pod {
	app := corev1.Container{
		Name: "app", Image: "app:1",
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}},
		Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{"/bin/true"}}}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "apps",
		Labels: map[string]string{LabelOptIn: OptInValue}}}
	mount := func(name, at string) {
		pod.Spec.Volumes = append(pod.Spec.Volumes,
			corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		app.VolumeMounts = append(app.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: at})
	}
	if shape&0x1 != 0 {
		mount("tmp", "/tmp")
	}
	if shape&0x2 != 0 {
		mount("data", "/data")
	}
	if shape&0x40 != 0 {
		mount("online", "/berth/online")
	}
	if shape&0x4 != 0 {
		pod.Spec.TerminationGracePeriodSeconds = ptr.To(int64(5))
	}
	if shape&0x8 != 0 {
		app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/ready", Port: intstr.FromInt32(8080)}}}
	}
	if shape&0x20 != 0 {
		app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	}
	pod.Spec.Containers = []corev1.Container{app}
	if shape&0x10 != 0 {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "side", Image: "side:1"})
	}
	return pod
}

// uniqueNamesAndMounts checks what the apiserver would otherwise refuse with a
// "must be unique" or "not found" error that names no berth key: unique volume
// and container names, unique mount paths per container, mounts of existing volumes.
func uniqueNamesAndMounts(pod *corev1.Pod) error {
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if vols[v.Name] {
			return fmt.Errorf("volume name %q twice", v.Name)
		}
		vols[v.Name] = true
	}
	names := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...),
		pod.Spec.Containers...) {
		if names[c.Name] {
			return fmt.Errorf("container name %q twice", c.Name)
		}
		names[c.Name] = true
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if paths[m.MountPath] {
				return fmt.Errorf("container %q mounts %s twice", c.Name, m.MountPath)
			}
			paths[m.MountPath] = true
			if !vols[m.Name] {
				return fmt.Errorf("container %q mounts volume %q, which the pod does not have", c.Name, m.Name)
			}
		}
	}
	return nil
}
