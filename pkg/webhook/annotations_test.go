package webhook

import (
	"strings"
	"testing"
	"time"
)

func TestParseAnnotationsValues(t *testing.T) {
	t.Parallel()
	cfg, err := ParseAnnotations(map[string]string{
		AnnoPreOnline: "configmap:hooks/warm.sh", AnnoCheckURL: ":8080/check", AnnoDrain: "3s",
		AnnoVolumes: " cache=emptydir:/cache , data=pvc/shared-data:/data:ro ", AnnoDebug: "JAVA", AnnoDebugPort: "9000",
		"unrelated.example.com/x": "ignored",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CheckURL != "http://127.0.0.1:8080/check" || cfg.Drain != 3*time.Second || cfg.Debug != DebugJava || cfg.DebugPort != 9000 {
		t.Errorf("unexpected config %+v", cfg)
	}
	if s := cfg.PreOnlineScript; s == nil || s.ConfigMap != "hooks" || s.Key != "warm.sh" {
		t.Errorf("preonline script %+v", s)
	}
	if len(cfg.Volumes) != 2 || cfg.Volumes[1].ClaimName != "shared-data" || !cfg.Volumes[1].ReadOnly || cfg.Volumes[0].Kind != VolumeEmptyDir {
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
