package webhook

import (
	"testing"

	"github.com/berth-dev/berth/pkg/wellknown"
)

// TestAdmitsSchedulerAnnotations: in a namespace opted in to the webhook, a pod carrying the
// scheduler's berth.dev/ annotations is admitted, not denied as an unknown key, while a typo of
// one is still refused.
func TestAdmitsSchedulerAnnotations(t *testing.T) {
	annos := map[string]string{wellknown.Profile: "network", wellknown.NetworkBandwidth: "500M"}
	if _, err := ParseAnnotations(annos); err != nil {
		t.Errorf("the scheduler's annotations are rejected: %v", err)
	}
	if _, err := ParseAnnotations(map[string]string{"berth.dev/profil": "network"}); err == nil {
		t.Error("a typo of a berth.dev/ key is accepted")
	}
}
