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

// TestClientConfig: the "ipam" keys both plugins read to reach the agent are checked the same way,
// and an unset socket or timeout means the defaults.
func TestClientConfig(t *testing.T) {
	for _, tc := range []struct {
		c    Client
		want string // "" for valid
	}{
		{Client{}, ""},
		{Client{AgentSocket: "/run/x.sock", TimeoutSeconds: 600}, ""},
		{Client{AgentSocket: "run/x.sock"}, `"agentSocket" "run/x.sock" must be an absolute path`},
		{Client{TimeoutSeconds: 601}, `"timeoutSeconds" must be 0 (20 s) to 600, got 601`},
		{Client{TimeoutSeconds: -1}, "got -1"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: got %v, want %q", tc.c, err, tc.want)
		}
	}
	if got := (Client{}).Socket(); got != DefaultSocket {
		t.Errorf("default socket %q, want %q", got, DefaultSocket)
	}
}
