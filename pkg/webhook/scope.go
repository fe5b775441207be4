package webhook

import (
	"net/http"

	"k8s.io/client-go/rest"
)

// scopeByName narrows the list and watch requests of the given collections (URL path ->
// object name) to the one object the webhook needs, with a metadata.name field selector.
//
// The certificate rotator (cert-controller) lists and watches every Secret of the webhook's
// namespace and every MutatingWebhookConfiguration, and its cache cannot be configured. RBAC
// grants a list or watch by resourceNames only when the request names the object this way,
// so with the selector the webhook's Role names its own Secret and configuration, and the
// webhook cannot read the other Secrets of its namespace (the p2p peer key, the IPAM's etcd
// client certificate).
func scopeByName(cfg *rest.Config, scopes map[string]string) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &nameScoped{rt: rt, scopes: scopes}
	})
}

type nameScoped struct {
	rt     http.RoundTripper
	scopes map[string]string
}

func (n *nameScoped) RoundTrip(req *http.Request) (*http.Response, error) {
	name, ok := n.scopes[req.URL.Path]
	if !ok || req.Method != http.MethodGet || req.URL.Query().Has("fieldSelector") {
		return n.rt.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	q := req.URL.Query()
	q.Set("fieldSelector", "metadata.name="+name)
	req.URL.RawQuery = q.Encode()
	return n.rt.RoundTrip(req)
}
