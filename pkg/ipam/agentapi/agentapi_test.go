package agentapi

import (
	"bytes"
	"strings"
	"testing"
)

// TestReadRequestBounded: the agent reads at most MaxMessage bytes of a
// request; a larger one is refused with a message naming the bound, without
// allocating its size.
func TestReadRequestBounded(t *testing.T) {
	big := `{"verb":"GC","network":"n","args":"` + strings.Repeat("a", MaxMessage) + `"}`
	if _, err := ReadRequest(strings.NewReader(big)); err == nil ||
		!strings.Contains(err.Error(), "at most") {
		t.Fatalf("request of %d bytes: got %v, want an error naming the bound", len(big), err)
	}
	req, err := ReadRequest(bytes.NewBufferString(`{"verb":"ADD","containerID":"c","ifName":"eth0",` +
		`"network":"n","ipam":{"pool":"p"}}`))
	if err != nil || req.Verb != VerbAdd || string(req.IPAM) != `{"pool":"p"}` {
		t.Fatalf("small request: %+v, %v", req, err)
	}
}
