package webhook

import "testing"

// BenchmarkHandle is the handler's own cost per review (decode, parse, mutate, patch), without TLS or HTTP.
func BenchmarkHandle(b *testing.B) {
	h := newTestHandler(b)
	req := request("apps", podJSON(map[string]string{
		AnnoPreStart:  "inline:echo hi",
		AnnoPreOnline: "inline:echo warm",
		AnnoDebug:     "java",
		AnnoVolumes:   "cache=emptydir:/cache",
	}))
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(b.Context(), req); !resp.Allowed {
			b.Fatal(resp.Result.Message)
		}
	}
}
