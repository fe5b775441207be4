package webhook

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FuzzParseAndMutate: whatever the annotation values, parsing and mutation
// return an error or a patch, never panic. Run longer with
//
//	go test ./pkg/webhook -run '^$' -fuzz FuzzParseAndMutate -fuzztime 60s
//
// The seeds below run as a plain unit test.
func FuzzParseAndMutate(f *testing.F) {
	seeds := [][6]string{
		{"inline:echo hi", "", "", "", "", ""},
		{"", "none", "", "", "", ""},
		{"file:/app/pre.sh", "configmap:hooks/warm.sh", ":8080/check", "java", "a=emptydir:/a, b=pvc/c:/b:ro", "10s"},
		{"configmap:x/y", "inline:x", "http://localhost:1/", "port", "a=emptydir:/a:rw", "0s"},
		{"inline:", "bad", "http://[::1]:99999/", "java", ",,,", "-1s"},
		{"inline:x", "none", "https://127.0.0.1:0", "port", "a=pvc/:/x", "9999h"},
		{"\x00", "\xff", "::", "JAVA", "=:", "1e9s"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	opts := DefaultOptions()
	f.Fuzz(func(t *testing.T, prestart, preonline, check, debug, volumes, drain string) {
		annos := map[string]string{}
		for k, v := range map[string]string{AnnoPreStart: prestart, AnnoPreOnline: preonline, AnnoCheckURL: check, AnnoDebug: debug, AnnoVolumes: volumes, AnnoDrain: drain} {
			if v != "" {
				annos[k] = v
			}
		}
		cfg, err := ParseAnnotations(annos)
		if err != nil {
			if _, ok := err.(*AnnotationError); !ok {
				t.Fatalf("parse error is not an *AnnotationError: %T %v", err, err)
			}
			return
		}
		pod := fuzzPod()
		if _, err := MutationPatch(pod, cfg, opts); err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func fuzzPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "apps"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "app:1",
			Ports:         []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}},
			Lifecycle:     &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/bin/true"}}}},
		}}},
	}
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
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
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
