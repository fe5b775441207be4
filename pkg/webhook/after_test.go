package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestParseAfter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		value string
		want  string // refs joined, or the error's fragment
		err   bool
	}{
		{"db", "/db", false},
		{" db , payments/api ,", "/db,payments/api", false},
		{"", "no Services listed", true},
		{"db, db", `Service "db" appears twice`, true},
		{"Db", "not a Service name", true},
		{"9lives", "not a Service name", true},
		{"a/b/c", "not a Service name", true},
		{"Team_2/api", "not a namespace name", true},
		{strings.Repeat("a,", 16) + "a", "more than 16 Services", true},
		{strings.Repeat("a", 2000), "at most 1024 are allowed", true},
	}
	for _, tc := range cases {
		refs, err := parseAfter(AnnoAfter, tc.value)
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "example") {
				t.Errorf("%.40q: want an error with %q and an example, got %v", tc.value, tc.want, err)
			}
			continue
		}
		var got []string
		for _, r := range refs {
			got = append(got, r.String())
		}
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("%q: got %v, %v; want %s", tc.value, got, err, tc.want)
		}
	}
}

// fakeReadiness stands in for the informer caches (which the integration tests use for real).
type fakeReadiness struct {
	ready   map[string]int // "ns/name" -> ready endpoints; absent: no such Service
	optedIn map[string]bool
	err     error
}

func (f *fakeReadiness) ReadyEndpoints(_ context.Context, ref ServiceRef) (int, bool, error) {
	n, ok := f.ready[ref.String()]
	return n, ok, f.err
}

func (f *fakeReadiness) NamespaceOptedIn(_ context.Context, ns string) (bool, error) {
	return f.optedIn[ns], nil
}

// TestAfterGateDecision: the webhook gates a pod unless every Service is ready at admission.
func TestAfterGateDecision(t *testing.T) {
	t.Parallel()
	r := &fakeReadiness{ready: map[string]int{"apps/db": 1, "apps/cache": 0, "team2/api": 3, "plain/x": 5},
		optedIn: map[string]bool{"team2": true}}
	cases := []struct {
		name  string
		annos map[string]string
		r     ServiceReadiness
		gate  bool
		deny  string
	}{
		{"ready", map[string]string{AnnoAfter: "db"}, r, false, ""},
		{"not ready", map[string]string{AnnoAfter: "db, cache"}, r, true, ""},
		{"not enough", map[string]string{AnnoAfter: "db", AnnoAfterReady: "2"}, r, true, ""},
		{"missing Service", map[string]string{AnnoAfter: "gone"}, r, true, ""},
		{"opted-in namespace, ready", map[string]string{AnnoAfter: "team2/api", AnnoAfterReady: "3"}, r,
			false, ""},
		{"own namespace spelled out", map[string]string{AnnoAfter: "apps/db"}, r, false, ""},
		{"namespace not opted in", map[string]string{AnnoAfter: "plain/x"}, r, false,
			`namespace "plain", which is not labelled berth.dev/inject=enabled`},
		{"kube-system", map[string]string{AnnoAfter: "kube-system/kube-dns"}, r, false,
			`never waits on Services in namespace "kube-system"`},
		{"read error gates", map[string]string{AnnoAfter: "db"},
			&fakeReadiness{err: errors.New("cache down")}, true, ""},
		{"no caches: gated", map[string]string{AnnoAfter: "db"}, nil, true, ""},
		{"no caches: no other namespace", map[string]string{AnnoAfter: "team2/api"}, nil, false,
			"which this webhook cannot check"},
		{"ready without after", map[string]string{AnnoAfterReady: "2"}, r, false,
			"only meaningful with berth.dev/after"},
		{"timeout range", map[string]string{AnnoAfter: "db", AnnoAfterTimeout: "48h"}, r, false,
			"from 1s to 24h0m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHandler(t)
			if tc.r != nil {
				h.SetReadiness(tc.r)
			}
			raw := podJSON(tc.annos)
			resp := h.Handle(t.Context(), request("apps", raw))
			if tc.deny != "" {
				if resp.Allowed || !strings.Contains(resp.Result.Message, tc.deny) || resp.Result.Code != 403 {
					t.Fatalf("want a 403 denial with %q, got allowed=%v %+v", tc.deny, resp.Allowed, resp.Result)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("denied: %s", resp.Result.Message)
			}
			var pod corev1.Pod
			mutated := applyPatch(t, raw, resp)
			if err := json.Unmarshal(mutated, &pod); err != nil {
				t.Fatal(err)
			}
			if _, got := hasGate(&pod); got != tc.gate {
				t.Errorf("gate %v, want %v (gates %v)", got, tc.gate, pod.Spec.SchedulingGates)
			}
			if !strings.Contains(pod.Annotations[AnnoStatus], `"after"`) {
				t.Errorf("status does not record after: %s", pod.Annotations[AnnoStatus])
			}
			if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Volumes) != 0 {
				t.Errorf("berth.dev/after alone injected containers or volumes: %v %v", pod.Spec.InitContainers,
					pod.Spec.Volumes)
			}
			// Re-admission (reinvocation) changes nothing: one gate at most.
			if again := h.Handle(t.Context(), request("apps", mutated)); !again.Allowed ||
				len(again.Patches) != 0 {
				t.Errorf("re-admission changed the pod: %+v", again.Patches)
			}
		})
	}
}

// TestCountReady: a nil condition is ready, not-ready endpoints do not count, and a dual-stack
// Service's two slices naming the same pods count each pod once.
func TestCountReady(t *testing.T) {
	t.Parallel()
	ep := func(pod string, ready *bool, addr string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr},
			Conditions: discoveryv1.EndpointConditions{Ready: ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "apps", Name: pod}}
	}
	v4 := discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			ep("a", ptr.To(true), "10.0.0.1"), ep("b", nil, "10.0.0.2"), ep("c", ptr.To(false), "10.0.0.3")}}
	v6 := discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv6,
		Endpoints: []discoveryv1.Endpoint{
			ep("a", ptr.To(true), "fd00::1"), ep("b", nil, "fd00::2")}}
	if n := countReady([]discoveryv1.EndpointSlice{v4, v6}); n != 2 {
		t.Errorf("counted %d ready endpoints, want 2 (a and b)", n)
	}
}

// TestOptInLabelRequired: a pod with berth.dev/ annotations but without berth.dev/inject=enabled
// is refused, naming the label; annotations of other components alone need no label.
func TestOptInLabelRequired(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	for _, tc := range []struct {
		annos map[string]string
		deny  bool
	}{
		{map[string]string{AnnoPreStart: "inline:x"}, true},
		{map[string]string{AnnoAfter: "db"}, true},
		{map[string]string{"berth.dev/profile": "network"}, false},
		{nil, false},
	} {
		var pod map[string]any
		if err := json.Unmarshal(podJSON(tc.annos), &pod); err != nil {
			t.Fatal(err)
		}
		delete(pod["metadata"].(map[string]any), "labels")
		raw, _ := json.Marshal(pod)
		resp := h.Handle(t.Context(), request("apps", raw))
		if tc.deny != !resp.Allowed {
			t.Errorf("%v: allowed=%v, want denied=%v", tc.annos, resp.Allowed, tc.deny)
		}
		if tc.deny && !strings.Contains(resp.Result.Message, "berth.dev/inject=enabled") {
			t.Errorf("%v: the denial does not name the label: %s", tc.annos, resp.Result.Message)
		}
		if !tc.deny && len(resp.Patches) != 0 {
			t.Errorf("%v: patched a pod that does not use the webhook", tc.annos)
		}
	}
}

// TestProbeTargetAsTheKubelet: a check URL taken from a probe keeps its query (not %3F), its
// host and its httpHeaders.
func TestProbeTargetAsTheKubelet(t *testing.T) {
	t.Parallel()
	pod := fuzzPod()
	app := &pod.Spec.Containers[0]
	app.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "/check?deep=1&x=%2F", Port: intstr.FromString("http"), Host: "::1",
		HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "berth"},
			{Name: "Host", Value: "shop.internal"}}}}}
	app.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "alive?q", Port: intstr.FromInt32(9090)}}}
	if err := Mutate(pod, &Config{Debug: DebugPort, DebugPort: 5005,
		DebugProxyPort: DefaultDebugProxyPort, Marker: DefaultMarker}, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	args := pod.Spec.InitContainers[len(pod.Spec.InitContainers)-1].Args
	for _, want := range []string{"--check-url=http://[::1]:8080/check?deep=1&x=%2F",
		"--check-header=X-Probe: berth",
		"--check-header=Host: shop.internal", "--live-url=http://127.0.0.1:9090/alive?q"} {
		if !slices.Contains(args, want) {
			t.Errorf("sidecar args lack %q: %q", want, args)
		}
	}
}

// TestDebugRefusedOnHostNetwork: the debugger would listen on the node's loopback.
func TestDebugRefusedOnHostNetwork(t *testing.T) {
	t.Parallel()
	pod := fuzzPod()
	pod.Spec.HostNetwork = true
	err := Mutate(pod, &Config{Debug: DebugJava, DebugPort: 5005,
		DebugProxyPort: DefaultDebugProxyPort, Marker: DefaultMarker}, DefaultOptions())
	if err == nil || !strings.Contains(err.Error(), `"berth.dev/debug"`) ||
		!strings.Contains(err.Error(), "hostNetwork") {
		t.Errorf("want a refusal naming berth.dev/debug and hostNetwork, got %v", err)
	}
}

// TestForgedStatusNamingOwnVolume: a berth.dev/status listing one of the pod's own volumes is
// not proof of injection: the annotations are still checked (and a bad one refused).
func TestForgedStatusNamingOwnVolume(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	for _, tc := range []struct {
		annos map[string]string
		deny  bool
	}{
		{map[string]string{AnnoDebug: "python", AnnoStatus: `{"features":["debug"],"volumes":["data"]}`},
			true},
		{map[string]string{AnnoAfter: "db", AnnoStatus: `{"features":["after"],"volumes":["data"]}`}, false},
	} {
		var pod map[string]any
		if err := json.Unmarshal(podJSON(tc.annos), &pod); err != nil {
			t.Fatal(err)
		}
		pod["metadata"].(map[string]any)["labels"] = map[string]any{LabelOptIn: OptInValue,
			LabelInjected: "true"}
		pod["spec"].(map[string]any)["volumes"] = []any{map[string]any{"name": "data",
			"emptyDir": map[string]any{}}}
		raw, _ := json.Marshal(pod)
		resp := h.Handle(t.Context(), request("apps", raw))
		if tc.deny && resp.Allowed {
			t.Errorf("%v: a bad annotation passed behind a forged status", tc.annos)
		}
		if !tc.deny && (!resp.Allowed || len(resp.Patches) == 0) {
			t.Errorf("%v: want the pod gated despite the forged status, got allowed=%v patches=%v", tc.annos,
				resp.Allowed, resp.Patches)
		}
	}
}

// TestErrorsClipValues: a denial quotes a bounded part of a huge annotation value.
func TestErrorsClipValues(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	huge := "inline" + strings.Repeat("x", 200<<10)
	for _, annos := range []map[string]string{{AnnoPreStart: huge}, {AnnoVolumes: "a=" + huge + ":/a"},
		{AnnoAfter: huge}} {
		resp := h.Handle(t.Context(), request("apps", podJSON(annos)))
		if resp.Allowed {
			t.Fatal("a huge bad value was accepted")
		}
		if n := len(resp.Result.Message); n > 1200 || !strings.Contains(resp.Result.Message, "more bytes)") {
			t.Errorf("denial of %d bytes, want a clipped value:\n%.300s", n, resp.Result.Message)
		}
	}
}

// TestOptInPolicyKnowsOtherComponents: the apiserver's policy berth-pod-opt-in exempts the keys
// that need no webhook; it must name every one this webhook lets through.
func TestOptInPolicyKnowsOtherComponents(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../manifests/webhook/validatingadmissionpolicy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for k := range OtherComponentKeys {
		if !strings.Contains(string(raw), "'"+k+"'") {
			t.Errorf("the policy berth-pod-opt-in does not exempt %s (a key of another component)", k)
		}
	}
	if !strings.Contains(string(raw), "'"+AnnoStatus+"'") ||
		!strings.Contains(string(raw), "'"+LabelOptIn+"'") {
		t.Errorf("the policy does not name %s and %s", AnnoStatus, LabelOptIn)
	}
}
