package webhook

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestParseAnnotationsValues(t *testing.T) {
	t.Parallel()
	cfg, err := ParseAnnotations(map[string]string{
		AnnoPreOnline: "configmap:hooks/warm.sh", AnnoCheckURL: ":8080/check", AnnoDrain: "3s",
		AnnoVolumes: " cache=emptydir:/cache , data=pvc/shared-data:/data:ro ", AnnoDebug: "JAVA",
		AnnoDebugPort:             "9000",
		"unrelated.example.com/x": "ignored",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CheckURL != "http://127.0.0.1:8080/check" || cfg.Drain != 3*time.Second ||
		cfg.Debug != DebugJava || cfg.DebugPort != 9000 {
		t.Errorf("unexpected config %+v", cfg)
	}
	if s := cfg.PreOnlineScript; s == nil || s.ConfigMap != "hooks" || s.Key != "warm.sh" {
		t.Errorf("preonline script %+v", s)
	}
	if len(cfg.Volumes) != 2 || cfg.Volumes[1].ClaimName != "shared-data" ||
		!cfg.Volumes[1].ReadOnly || cfg.Volumes[0].Kind != VolumeEmptyDir {
		t.Errorf("volumes %+v", cfg.Volumes)
	}
	if cfg.Marker != DefaultMarker || cfg.Shell != DefaultShell {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestParseResourceList(t *testing.T) {
	t.Parallel()
	rl, err := ParseResourceList("cpu=10m, memory=16Mi")
	if err != nil || rl.Cpu().MilliValue() != 10 || rl.Memory().Value() != 16<<20 {
		t.Errorf("got %v, %v", rl, err)
	}
	for _, bad := range []string{"gpu=1", "cpu", "cpu=lots"} {
		if _, err := ParseResourceList(bad); err == nil || !strings.Contains(err.Error(), "resource") {
			t.Errorf("%q: want a clear error, got %v", bad, err)
		}
	}
}

// TestMountClashesRefused: every annotation that would make two mounts share a
// path (which the apiserver refuses with "must be unique", naming no berth key)
// is refused at admission, naming the key; the near-miss variants are accepted.
func TestMountClashesRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		annos  map[string]string
		mounts []corev1.VolumeMount // the app container's own mounts
		want   []string             // empty: accepted
	}{
		{"marker in /tmp with inline script", map[string]string{AnnoPreOnline: "inline:echo warm",
			AnnoOnlineMarker: "/tmp/healthcheck.html"}, nil,
			[]string{`"berth.dev/online-marker"`, "/tmp is the script's scratch directory", "example"}},
		{"marker in /tmp with configmap script", map[string]string{AnnoPreOnline: "configmap:h/warm.sh",
			AnnoOnlineMarker: "/tmp/ok"}, nil,
			[]string{`"berth.dev/online-marker"`, "/tmp"}},
		{"marker in /tmp without script", map[string]string{AnnoPreOnline: NoScript,
			AnnoOnlineMarker: "/tmp/ok"}, nil, nil},
		{"marker below /tmp with script", map[string]string{AnnoPreOnline: "inline:x",
			AnnoOnlineMarker: "/tmp/online/ok"}, nil, nil},
		{"marker in /berth/bin", map[string]string{AnnoPreOnline: NoScript, AnnoOnlineMarker: "/berth/bin/ok"}, nil,
			[]string{`"berth.dev/online-marker"`, "inside /berth/bin", "example"}},
		{"marker in /berth/scripts/preonline", map[string]string{AnnoPreOnline: "configmap:h/w",
			AnnoOnlineMarker: "/berth/scripts/preonline/ok"}, nil,
			[]string{`"berth.dev/online-marker"`, "inside /berth/scripts"}},
		{"marker in /berth/state", map[string]string{AnnoPreOnline: NoScript,
			AnnoOnlineMarker: "/berth/state/ok"}, nil,
			[]string{`"berth.dev/online-marker"`, "inside /berth/state"}},
		{"volume at /berth/bin", map[string]string{AnnoPreStart: "inline:x",
			AnnoVolumes: "b=emptydir:/berth/bin"}, nil,
			[]string{`"berth.dev/volumes"`, "inside /berth", "example"}},
		{"volume at /berth/state", map[string]string{AnnoVolumes: "s=emptydir:/berth/state"}, nil,
			[]string{`"berth.dev/volumes"`, "inside /berth"}},
		{"two volumes one path", map[string]string{AnnoVolumes: "a=emptydir:/data, b=pvc/c:/data"}, nil,
			[]string{`"berth.dev/volumes"`, `"a" and "b" are both mounted at /data`}},
		{"volume at the marker directory", map[string]string{AnnoPreOnline: NoScript,
			AnnoVolumes: "w=emptydir:/www", AnnoOnlineMarker: "/www/ok"}, nil,
			[]string{`"berth.dev/online-marker"`, "already mounts something at /www"}},
		{"volume where the app mounts", map[string]string{AnnoVolumes: "w=emptydir:/cache"},
			[]corev1.VolumeMount{{Name: "c", MountPath: "/cache"}},
			[]string{`"berth.dev/volumes"`, "already mounts something at /cache"}},
		{"app mounts /berth/state, prestart", map[string]string{AnnoPreStart: "inline:x"},
			[]corev1.VolumeMount{{Name: "c", MountPath: "/berth/state"}},
			[]string{`volume "c" at /berth/state`, "berth.dev/prestart", "/berth is reserved", "e.g. /app/berth/state"}},
		{"app mounts /berth/bin, preonline", map[string]string{AnnoPreOnline: NoScript},
			[]corev1.VolumeMount{{Name: "c", MountPath: "/berth/bin"}},
			[]string{`volume "c" at /berth/bin`, "berth.dev/preonline"}},
		{"app mounts /berth, debug only", map[string]string{AnnoDebug: "port"},
			[]corev1.VolumeMount{{Name: "c", MountPath: "/berth/bin"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := parseAndMutate(tc.annos, tc.mounts)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want refused, got accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// parseAndMutate runs annos through parsing and mutation of a pod whose app has mounts,
// and checks an accepted pod has unique volume names and mount paths.
func parseAndMutate(annos map[string]string, mounts []corev1.VolumeMount) error {
	cfg, err := ParseAnnotations(annos)
	if err != nil {
		return err
	}
	pod := fuzzPod()
	for _, m := range mounts {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: m.Name})
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, m)
	}
	if err := Mutate(pod, cfg, DefaultOptions()); err != nil {
		return err
	}
	return uniqueNamesAndMounts(pod)
}

func TestDrainLeavesShutdownTime(t *testing.T) {
	t.Parallel()
	// fuzzPod has the default 30s grace period: a 25s drain leaves exactly the 5s minimum.
	if err := parseAndMutate(map[string]string{AnnoPreOnline: NoScript, AnnoDrain: "25s"}, nil); err != nil {
		t.Errorf("25s drain in a 30s grace period: %v", err)
	}
	if err := parseAndMutate(map[string]string{AnnoPreOnline: NoScript, AnnoDrain: "25500ms"},
		nil); err == nil || !strings.Contains(err.Error(), "leaves the app 4.5s") {
		t.Errorf("25.5s drain in a 30s grace period: want refused, got %v", err)
	}
}
