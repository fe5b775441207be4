package webhook

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// podJSON is a typical Deployment pod: one app container with a readiness probe.
func podJSON(annos map[string]string) []byte {
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{
			"generateName": "shop-",
			"namespace":    "apps",
			"annotations":  annos,
			"labels":       map[string]any{LabelOptIn: OptInValue},
		},
		"spec": map[string]any{
			"containers": []any{map[string]any{
				"name": "app", "image": "registry.example/shop:1.2",
				"ports": []any{map[string]any{"name": "http", "containerPort": 8080}},
				"readinessProbe": map[string]any{
					"httpGet": map[string]any{"path": "/check", "port": "http"},
				},
				"livenessProbe": map[string]any{
					"httpGet":          map[string]any{"path": "/check", "port": 8080},
					"periodSeconds":    10,
					"failureThreshold": 3,
				},
			}},
		},
	}
	b, err := json.Marshal(pod)
	if err != nil {
		panic(err)
	}
	return b
}

func request(ns string, raw []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "uid-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}}
}

func newTestHandler(t testing.TB) *Handler {
	t.Helper()
	opts := DefaultOptions()
	opts.Version = "test"
	h, err := NewHandler(opts, []string{"berth-system"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// applyPatch applies a response's patches to raw, as the apiserver does.
func applyPatch(t *testing.T, raw []byte, resp admission.Response) []byte {
	t.Helper()
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch5.DecodePatch(ops)
	if err != nil {
		t.Fatalf("the webhook produced an invalid JSON patch: %v", err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("the JSON patch does not apply to the pod: %v", err)
	}
	return out
}

// TestHandleGolden compares the patch of each feature with testdata/<case>.json. The goldens are
// written and reviewed by hand against docs/webhook.md, never by the code they check: a change
// of the patch is a change of what users get and must be made on purpose, in the file.
func TestHandleGolden(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		annos map[string]string
	}{
		{
			"prestart-inline",
			map[string]string{AnnoPreStart: "inline:echo preparing", AnnoPreStartAttempts: "2"},
		},
		{
			"preonline-configmap",
			map[string]string{AnnoPreOnline: "configmap:shop-hooks/warm.sh", AnnoDrain: "5s"},
		},
		{
			"preonline-none-file-prestart",
			map[string]string{
				AnnoPreOnline:    NoScript,
				AnnoPreStart:     "file:/app/hooks/prestart.sh",
				AnnoOnlineMarker: "/app/www/healthcheck.html",
			},
		},
		{"debug-java", map[string]string{AnnoDebug: "java"}},
		{
			"debug-port-checkurl",
			map[string]string{
				AnnoDebug:     "port",
				AnnoDebugPort: "9229",
				AnnoCheckURL:  ":8080/healthz",
			},
		},
		{
			"volumes",
			map[string]string{
				AnnoVolumes: "cache=emptydir:/var/cache/shop, shared=pvc/shop-shared:/data:ro",
			},
		},
		{
			"everything",
			map[string]string{
				AnnoPreStart:  "inline:echo hi",
				AnnoPreOnline: "inline:curl -s localhost:8080/warm",
				AnnoDebug:     "java",
				AnnoVolumes:   "cache=emptydir:/cache",
			},
		},
	}
	h := newTestHandler(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			raw := podJSON(tc.annos)
			resp := h.Handle(t.Context(), request("apps", raw))
			if !resp.Allowed || len(resp.Patches) == 0 {
				t.Fatalf(
					"want an allowed response with patches, got allowed=%v result=%+v",
					resp.Allowed,
					resp.Result,
				)
			}
			// jsonpatch emits operations in map order; compare them sorted.
			sorted := append([]jsonpatch.JsonPatchOperation(nil), resp.Patches...)
			sort.Slice(
				sorted,
				func(i, j int) bool { return sorted[i].Path+sorted[i].Operation < sorted[j].Path+sorted[j].Operation },
			)
			got, err := json.MarshalIndent(sorted, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".json")
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(want)) != strings.TrimSpace(string(got)) {
				t.Errorf("patch differs from %s (edit the file by hand once the change is "+
					"reviewed against docs/webhook.md):\n%s", golden, got)
			}
			// Re-admission of the mutated pod (reinvocation) injects nothing twice.
			mutated := applyPatch(t, raw, resp)
			again := h.Handle(t.Context(), request("apps", mutated))
			if !again.Allowed || len(again.Patches) != 0 {
				t.Errorf("second admission changed the pod again: %+v", again.Patches)
			}
		})
	}
}

func TestHandleNoPatch(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	cases := []struct {
		name, ns string
		annos    map[string]string
	}{
		{"no annotations", "apps", nil},
		{"other annotations only", "apps", map[string]string{"example.com/x": "y"}},
		{"kube-system", "kube-system", map[string]string{AnnoDebug: "java"}},
		{"kube-public", "kube-public", map[string]string{AnnoDebug: "java"}},
		{"own namespace", "berth-system", map[string]string{AnnoDebug: "java"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := h.Handle(t.Context(), request(tc.ns, podJSON(tc.annos)))
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Errorf(
					"want allowed without patch, got allowed=%v patches=%v",
					resp.Allowed,
					resp.Patches,
				)
			}
		})
	}
}

func TestHandleDenied(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	cases := []struct {
		name  string
		annos map[string]string
		want  []string
	}{
		{
			"typo key",
			map[string]string{"berth.dev/pre-start": "inline:x"},
			[]string{`"berth.dev/pre-start"`, "unknown berth annotation", "berth.dev/prestart"},
		},
		{
			"bad script source",
			map[string]string{AnnoPreStart: "bash:x"},
			[]string{`"berth.dev/prestart"`, "unknown script source", "example"},
		},
		{
			"bad duration",
			map[string]string{AnnoPreOnline: NoScript, AnnoDrain: "ten"},
			[]string{`"berth.dev/drain"`, "not a duration", `"15s"`},
		},
		{
			"drain over grace",
			map[string]string{AnnoPreOnline: NoScript, AnnoDrain: "40s"},
			[]string{
				`"berth.dev/drain"="40s"`,
				"leaves the app 0s",
				"terminationGracePeriodSeconds (30s)",
				"at most 25s",
				"at least 45",
			},
		},
		{
			"drain near grace",
			map[string]string{AnnoPreOnline: NoScript, AnnoDrain: "27s"},
			[]string{
				`"berth.dev/drain"="27s"`,
				"leaves the app 3s",
				"(30s)",
				"needs at least 5s",
				"at most 25s",
				"at least 32",
			},
		},
		{
			"remote check url",
			map[string]string{AnnoDebug: "java", AnnoCheckURL: "http://10.0.0.1:80/"},
			[]string{`"berth.dev/check-url"`, "must point at the pod itself"},
		},
		{
			"bad debug mode",
			map[string]string{AnnoDebug: "python"},
			[]string{`"berth.dev/debug"`, "unknown debug mode", `"java"`},
		},
		{
			"missing container",
			map[string]string{AnnoDebug: "java", AnnoContainer: "web"},
			[]string{`"berth.dev/container"`, "no container of that name"},
		},
		{
			"volume entry",
			map[string]string{AnnoVolumes: "data=nfs:/data"},
			[]string{`"berth.dev/volumes"`, "neither emptydir nor pvc"},
		},
		{
			"orphan option",
			map[string]string{AnnoPreStartAttempts: "3"},
			[]string{`"berth.dev/prestart-attempts"`, "only meaningful with berth.dev/prestart"},
		},
		{
			"attempts range",
			map[string]string{AnnoPreStart: "inline:x", AnnoPreStartAttempts: "100"},
			[]string{"from 1 to 10"},
		},
		{
			"shell alone",
			map[string]string{AnnoShell: "/bin/bash"},
			[]string{
				`"berth.dev/shell"`,
				"only used to run berth.dev/prestart or berth.dev/preonline scripts",
				"example",
			},
		},
		{
			"shell with preonline none",
			map[string]string{AnnoShell: "/bin/bash", AnnoPreOnline: "none"},
			[]string{`"berth.dev/shell"`, "has no script"},
		},
		{
			"container alone",
			map[string]string{AnnoContainer: "app"},
			[]string{`"berth.dev/container"`, "none is set", "berth.dev/debug"},
		},
		{
			"hook resources alone",
			map[string]string{AnnoHookResources: "memory=256Mi", AnnoVolumes: "a=emptydir:/a"},
			[]string{`"berth.dev/hook-resources"`, "none is injected", `"cpu=500m,memory=256Mi"`},
		},
		{
			"hook resources gpu",
			map[string]string{AnnoPreStart: "inline:x", AnnoHookResources: "nvidia.com/gpu=1"},
			[]string{`"berth.dev/hook-resources"`, "want cpu=<q>"},
		},
		{
			"hook resources storage",
			map[string]string{AnnoPreStart: "inline:x", AnnoHookResources: "ephemeral-storage=1Gi"},
			[]string{`"berth.dev/hook-resources"`, "only cpu and memory"},
		},
		{
			"hook resources zero",
			map[string]string{AnnoPreStart: "inline:x", AnnoHookResources: "memory=0"},
			[]string{"memory limit must be positive"},
		},
		{
			"hook resources below request",
			map[string]string{AnnoPreStart: "inline:x", AnnoHookResources: "memory=8Mi"},
			[]string{`"berth.dev/hook-resources"`, "below the hook containers' request 16Mi"},
		},
		{
			"preonline typo",
			map[string]string{AnnoPreOnline: "nothing"},
			[]string{`"berth.dev/preonline"`, `or "none" for the marker without a script`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := h.Handle(t.Context(), request("apps", podJSON(tc.annos)))
			if resp.Allowed {
				t.Fatalf("want denied, got allowed with %d patches", len(resp.Patches))
			}
			if resp.Result.Code != 403 {
				t.Errorf("want code 403, got %d", resp.Result.Code)
			}
			for _, w := range tc.want {
				if !strings.Contains(resp.Result.Message, w) {
					t.Errorf("message %q does not contain %q", resp.Result.Message, w)
				}
			}
		})
	}
}

// TestUnknownFieldsSurvive: a newer apiserver may send fields this webhook's
// API types do not know; the patch must not remove them.
func TestUnknownFieldsSurvive(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	var pod map[string]any
	annos := map[string]string{AnnoPreOnline: NoScript, AnnoDebug: "java"}
	if err := json.Unmarshal(podJSON(annos), &pod); err != nil {
		t.Fatal(err)
	}
	spec := pod["spec"].(map[string]any)
	spec["futureSpecField"] = map[string]any{"keep": true}
	spec["containers"].([]any)[0].(map[string]any)["futureContainerField"] = "keep"
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	resp := h.Handle(t.Context(), request("apps", raw))
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result.Message)
	}
	out := applyPatch(t, raw, resp)
	for _, f := range []string{`"futureSpecField":{"keep":true}`, `"futureContainerField":"keep"`} {
		if !strings.Contains(string(out), f) {
			t.Errorf("mutated pod lost %s", f)
		}
	}
}

// TestMutationEffects asserts what a user notices in the mutated pod spec.
func TestMutationEffects(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	raw := podJSON(
		map[string]string{
			AnnoPreStart:  "inline:echo hi",
			AnnoPreOnline: NoScript,
			AnnoDebug:     "java",
		},
	)
	out := applyPatch(t, raw, h.Handle(context.Background(), request("apps", raw)))
	pod := &corev1.Pod{}
	if err := json.Unmarshal(out, pod); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range pod.Spec.InitContainers {
		names = append(names, c.Name)
		sc := c.SecurityContext
		if sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem ||
			*sc.AllowPrivilegeEscalation ||
			sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s: not hardened: %+v", c.Name, sc)
		}
		if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("%s: no requests/limits", c.Name)
		}
		if c.StartupProbe != nil {
			t.Errorf("%s: has a startupProbe (would deadlock the app's start)", c.Name)
		}
	}
	if strings.Join(names, ",") != "berth-install,berth-prestart,berth-sidecar" {
		t.Errorf("init containers %v", names)
	}
	side := pod.Spec.InitContainers[2]
	if side.RestartPolicy == nil || *side.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("berth-sidecar is not a native sidecar")
	}
	if side.ReadinessProbe.HTTPGet.Path != "/online" {
		t.Errorf("pod readiness does not depend on the marker: %+v", side.ReadinessProbe)
	}
	app := pod.Spec.Containers[0]
	if app.LivenessProbe.HTTPGet.Path != "/livez" ||
		app.LivenessProbe.HTTPGet.Port.IntValue() != 15120 ||
		app.LivenessProbe.PeriodSeconds != 10 {
		t.Errorf("liveness not rewritten to the sidecar: %+v", app.LivenessProbe)
	}
	if app.Lifecycle == nil || app.Lifecycle.PreStop == nil ||
		app.Lifecycle.PreStop.Exec.Command[1] != "prestop" {
		t.Errorf("no berth preStop on the app: %+v", app.Lifecycle)
	}
	if len(app.Env) != 1 ||
		!strings.Contains(
			app.Env[0].Value,
			"-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=127.0.0.1:5005",
		) {
		t.Errorf("JAVA_TOOL_OPTIONS not set: %+v", app.Env)
	}
	if pod.Labels[LabelInjected] != "true" || pod.Annotations[AnnoStatus] == "" {
		t.Errorf("status not recorded: %v %v", pod.Labels, pod.Annotations)
	}
}

// TestPatchKeepsUserInitContainers: berth-install goes first, the pod's own
// init containers keep their place (and their unknown fields), hooks go last.
func TestPatchKeepsUserInitContainers(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	var pod map[string]any
	annos := map[string]string{
		AnnoPreStart: "inline:echo hi", AnnoPreOnline: NoScript, "team": "shop",
	}
	if err := json.Unmarshal(podJSON(annos), &pod); err != nil {
		t.Fatal(err)
	}
	pod["metadata"].(map[string]any)["labels"] = map[string]any{
		"app":      "shop",
		LabelOptIn: OptInValue,
	}
	spec := pod["spec"].(map[string]any)
	spec["initContainers"] = []any{
		map[string]any{"name": "migrate", "image": "m:1", "futureField": "keep"},
	}
	spec["volumes"] = []any{map[string]any{"name": "data", "emptyDir": map[string]any{}}}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	out := applyPatch(t, raw, h.Handle(t.Context(), request("apps", raw)))
	got := &corev1.Pod{}
	if err := json.Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range got.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != "berth-install,migrate,berth-prestart,berth-sidecar" {
		t.Errorf("init containers %v", names)
	}
	if got.Spec.Volumes[0].Name != "data" || got.Labels["app"] != "shop" ||
		got.Labels[LabelInjected] != "true" ||
		got.Annotations["team"] != "shop" {
		t.Errorf(
			"existing volumes, labels or annotations disturbed: %v %v %v",
			got.Spec.Volumes,
			got.Labels,
			got.Annotations,
		)
	}
	if !strings.Contains(string(out), `"futureField":"keep"`) {
		t.Error("unknown field of a user init container lost")
	}
}

// TestUserStatusIsNotInjection: a berth.dev/status the pod's containers do not
// back (typed or copied by a user) must not make berth skip the pod: it is
// injected and the status overwritten. A really mutated pod is still skipped.
func TestUserStatusIsNotInjection(t *testing.T) {
	t.Parallel()
	h := newTestHandler(t)
	for _, fake := range []string{
		`{"version":"x"}`, `not json`, `{"containers":["berth-sidecar"]}`, `{"containers":["app"]}`,
	} {
		raw := podJSON(map[string]string{AnnoDebug: "java", AnnoStatus: fake})
		resp := h.Handle(t.Context(), request("apps", raw))
		if !resp.Allowed || len(resp.Patches) == 0 {
			t.Fatalf(
				"status %s: want injected, got allowed=%v patches=%d",
				fake,
				resp.Allowed,
				len(resp.Patches),
			)
		}
		var pod corev1.Pod
		if err := json.Unmarshal(applyPatch(t, raw, resp), &pod); err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseAnnotations(pod.Annotations)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(pod.Annotations[AnnoStatus], `"berth-sidecar"`) ||
			!AlreadyInjected(&pod, cfg) {
			t.Errorf("status %s not overwritten: %s", fake, pod.Annotations[AnnoStatus])
		}
	}
}

func TestPreOnlineNoneAnyCase(t *testing.T) {
	t.Parallel()
	cfg, err := ParseAnnotations(map[string]string{AnnoPreOnline: "NONE"})
	if err != nil || !cfg.PreOnline || cfg.PreOnlineScript != nil {
		t.Errorf("NONE: want preOnline without script, got %+v %v", cfg, err)
	}
}

// TestLivenessKeepsItsOwnURL: the debug-aware /livez checks what the app's
// liveness probe checked, not the readiness URL (a not-ready app is not dead).
func TestLivenessKeepsItsOwnURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		liveness *corev1.Probe
		want     string // the --live-url arg, "" for none
	}{
		{"own httpGet", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/alive", Port: intstr.FromInt32(9090)},
		}}, "--live-url=http://127.0.0.1:9090/alive"},
		{"exec liveness", &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			Exec: &corev1.ExecAction{Command: []string{"true"}},
		}}, ""},
	} {
		pod := fuzzPod()
		app := &pod.Spec.Containers[0]
		app.ReadinessProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")},
			},
		}
		app.LivenessProbe = tc.liveness
		cfg := &Config{Debug: DebugPort, DebugPort: 5005, DebugProxyPort: DefaultDebugProxyPort,
			Marker: DefaultMarker}
		if err := Mutate(pod, cfg, DefaultOptions()); err != nil {
			t.Fatal(err)
		}
		args := strings.Join(pod.Spec.InitContainers[len(pod.Spec.InitContainers)-1].Args, " ")
		if !strings.Contains(args, "--check-url=http://127.0.0.1:8080/ready") {
			t.Errorf("%s: check URL is not the readiness probe's: %s", tc.name, args)
		}
		if got := strings.Contains(args, "--live-url="); got != (tc.want != "") ||
			!strings.Contains(args, tc.want) {
			t.Errorf("%s: want %q in the sidecar args, got %s", tc.name, tc.want, args)
		}
	}
}

// TestHookResources: berth.dev/hook-resources raises the limits of the
// containers running scripts (berth-prestart, berth-sidecar), keeps the
// requests, and leaves berth-install at the webhook's defaults.
func TestHookResources(t *testing.T) {
	t.Parallel()
	cfg, err := ParseAnnotations(
		map[string]string{
			AnnoPreStart:      "inline:pip install -r req.txt",
			AnnoPreOnline:     "inline:java -jar warm.jar",
			AnnoHookResources: "cpu=500m, memory=256Mi",
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	pod := fuzzPod()
	if err := Mutate(pod, cfg, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	for _, c := range pod.Spec.InitContainers {
		lim, req := c.Resources.Limits, c.Resources.Requests
		wantMem, wantCPU := "64Mi", "200m"
		if c.Name != InstallName {
			wantMem, wantCPU = "256Mi", "500m"
		}
		if lim.Memory().String() != wantMem || lim.Cpu().String() != wantCPU ||
			req.Memory().String() != "16Mi" {
			t.Errorf(
				"%s: limits %v requests %v, want limits cpu=%s memory=%s and the default requests",
				c.Name,
				lim,
				req,
				wantCPU,
				wantMem,
			)
		}
	}
}

// TestRunAsGroup: injected containers run as group 65532, hooks in the app's
// image as the app's own non-root group when it names one.
func TestRunAsGroup(t *testing.T) {
	t.Parallel()
	cfg, err := ParseAnnotations(map[string]string{AnnoPreStart: "inline:x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		appGroup             *int64
		wantInstall, wantPre int64
	}{{nil, 65532, 65532}, {ptr.To(int64(2000)), 65532, 2000}} {
		pod := fuzzPod()
		pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsGroup: tc.appGroup}
		if err := Mutate(pod, cfg, DefaultOptions()); err != nil {
			t.Fatal(err)
		}
		for _, c := range pod.Spec.InitContainers {
			want := tc.wantPre
			if c.Name == InstallName {
				want = tc.wantInstall
			}
			if g := c.SecurityContext.RunAsGroup; g == nil || *g != want {
				t.Errorf("%s: runAsGroup %v, want %d", c.Name, g, want)
			}
		}
	}
}
