package balance

import (
	"testing"

	"github.com/berth-dev/berth/pkg/webhook"
)

// TestWebhookAcceptsSchedulerAnnotations: in a namespace opted in to the berth
// webhook, a pod carrying the scheduler's berth.dev/ annotations is admitted,
// not denied as an unknown key.
func TestWebhookAcceptsSchedulerAnnotations(t *testing.T) {
	annos := map[string]string{AnnotationProfile: "network", AnnotationBandwidth: "500M"}
	for k := range annos {
		if _, ok := webhook.OtherComponentKeys[k]; !ok {
			t.Errorf("webhook.OtherComponentKeys lacks the scheduler's %s", k)
		}
	}
	if _, err := webhook.ParseAnnotations(annos); err != nil {
		t.Errorf("the webhook rejects the scheduler's annotations: %v", err)
	}
	if _, err := webhook.ParseAnnotations(map[string]string{"berth.dev/profil": "network"}); err == nil {
		t.Error("a typo of a berth.dev/ key is accepted")
	}
}
