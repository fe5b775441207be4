package webhook

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Names of what the webhook injects. Every name starts with "berth-": user
// containers and volumes with that prefix are refused.
const (
	InstallName  = "berth-install"
	PreStartName = "berth-prestart"
	SidecarName  = "berth-sidecar"
	volBin       = "berth-bin"
	volState     = "berth-state"
	volTmp       = "berth-tmp"
	volOnline    = "berth-online"
	volScriptFmt = "berth-script-%s"
	reserved     = "berth-"

	// BinDir is where berth-install copies the hook binary for containers running the app's image.
	berthDir = "/berth"
	BinDir   = berthDir + "/bin"
	hookPath = BinDir + "/berth-hook"
	stateDir = berthDir + "/state"
	scripts  = berthDir + "/scripts"
)

// MinShutdownAfterDrain is the least time the app keeps between SIGTERM and the
// kill once the drain is over: a drain closer to terminationGracePeriodSeconds is refused.
const MinShutdownAfterDrain = 5 * time.Second

// Options are the webhook's own settings (flags of cmd/webhook).
type Options struct {
	// Image is the berth image holding the hook binary.
	Image string
	// HookBinary is the path of berth-hook inside Image.
	HookBinary string
	// HealthPort is the sidecar's HTTP port (/livez /online /healthz).
	HealthPort int
	// Resources are the requests and limits of every injected container.
	Resources corev1.ResourceRequirements
	// Version is recorded in the status annotation.
	Version string
}

// DefaultOptions returns the settings cmd/webhook starts from.
func DefaultOptions() Options {
	return Options{
		Image:      "ghcr.io/berth-dev/berth:v0.1.0",
		HookBinary: "/usr/local/bin/berth-hook",
		HealthPort: 15120,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"),
				corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		Version: "v1",
	}
}

// Status is the JSON of the berth.dev/status annotation.
type Status struct {
	Version    string   `json:"version"`
	Features   []string `json:"features"`
	Containers []string `json:"containers"`
	Volumes    []string `json:"volumes"`
}

// AlreadyInjected reports whether pod carries a berth.dev/status that this
// webhook wrote for the annotations cfg parsed from: valid JSON whose features
// are the ones cfg asks for, listing berth's own containers (berth- names) and
// volumes (berth- names or the names of berth.dev/volumes), all of which the
// pod has. Anything else (a status copied or typed by a user onto a plain pod,
// or naming one of the pod's own volumes) is not proof of injection: the pod
// is checked and mutated as any other, and the status overwritten.
func AlreadyInjected(pod *corev1.Pod, cfg *Config) bool {
	raw, ok := pod.Annotations[AnnoStatus]
	if !ok || pod.Labels[LabelInjected] != "true" {
		return false
	}
	var st Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil || !slices.Equal(st.Features, cfg.features()) {
		return false
	}
	if len(st.Containers)+len(st.Volumes) == 0 && len(cfg.After) == 0 {
		return false
	}
	have := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...),
		pod.Spec.Containers...) {
		have["c/"+c.Name] = true
	}
	for _, v := range pod.Spec.Volumes {
		have["v/"+v.Name] = true
	}
	shared := map[string]bool{}
	for _, sv := range cfg.Volumes {
		shared[sv.Name] = true
	}
	for _, c := range st.Containers {
		if !strings.HasPrefix(c, reserved) || !have["c/"+c] {
			return false
		}
	}
	for _, v := range st.Volumes {
		if (!strings.HasPrefix(v, reserved) && !shared[v]) || !have["v/"+v] {
			return false
		}
	}
	return true
}

// features are the status features Mutate records for c, in its order.
func (c *Config) features() []string {
	var out []string
	if len(c.Volumes) > 0 {
		out = append(out, "volumes")
	}
	if c.PreStart != nil {
		out = append(out, "prestart")
	}
	if c.PreOnline {
		out = append(out, "preonline")
	}
	if c.Debug != "" {
		out = append(out, "debug")
	}
	if len(c.After) > 0 {
		out = append(out, "after")
	}
	return out
}

// injection carries one pod's mutation state.
type injection struct {
	opts   Options
	cfg    *Config
	pod    *corev1.Pod
	app    *corev1.Container
	check  probeTarget
	status Status
}

// Mutate changes pod in place as cfg asks. It returns an *AnnotationError
// (or a plain error naming the conflicting field) when the pod cannot be
// mutated safely; then pod must be discarded.
func Mutate(pod *corev1.Pod, cfg *Config, opts Options) error {
	in := &injection{opts: opts, cfg: cfg, pod: pod, status: Status{Version: opts.Version}}
	if err := in.prepare(); err != nil {
		return err
	}
	in.addSharedVolumes()
	var inits []corev1.Container
	if cfg.PreStart != nil || cfg.PreOnline {
		in.addVolume(volBin, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
		in.pod.Spec.InitContainers = append([]corev1.Container{in.installContainer()},
			in.pod.Spec.InitContainers...)
		in.status.Containers = append(in.status.Containers, InstallName)
	}
	if cfg.PreStart != nil {
		in.status.Features = append(in.status.Features, "prestart")
		inits = append(inits, in.preStartContainer())
	}
	if cfg.PreOnline || cfg.Debug != "" {
		sc, err := in.sidecarContainer()
		if err != nil {
			return err
		}
		inits = append(inits, sc)
	}
	if cfg.PreOnline {
		in.status.Features = append(in.status.Features, "preonline")
		if err := in.mutateAppForPreOnline(); err != nil {
			return err
		}
	}
	if cfg.Debug != "" {
		in.status.Features = append(in.status.Features, "debug")
		if err := in.mutateAppForDebug(); err != nil {
			return err
		}
	}
	if len(cfg.After) > 0 {
		in.status.Features = append(in.status.Features, "after")
		// A gate can only be added at creation; the AfterController removes it.
		if _, gated := hasGate(pod); !gated && !cfg.AfterHolds {
			pod.Spec.SchedulingGates = append(pod.Spec.SchedulingGates,
				corev1.PodSchedulingGate{Name: GateAfter})
		}
	}
	// preStart and the sidecar run right before the app, after the pod's own init containers.
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, inits...)
	for _, c := range inits {
		in.status.Containers = append(in.status.Containers, c.Name)
	}
	return in.record()
}

// prepare finds the app container, refuses reserved names and resolves the check URL.
func (in *injection) prepare() error {
	spec := &in.pod.Spec
	if len(spec.Containers) == 0 {
		return fmt.Errorf("pod has no containers")
	}
	in.app = &spec.Containers[0]
	if in.cfg.Container != "" {
		in.app = nil
		for i := range spec.Containers {
			if spec.Containers[i].Name == in.cfg.Container {
				in.app = &spec.Containers[i]
			}
		}
		if in.app == nil {
			return bad(AnnoContainer, in.cfg.Container, "no container of that name in the pod")
		}
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if strings.HasPrefix(c.Name, reserved) {
			return fmt.Errorf("container name %q: the prefix %q is reserved for containers berth injects",
				c.Name, reserved)
		}
	}
	for _, v := range spec.Volumes {
		if strings.HasPrefix(v.Name, reserved) {
			return fmt.Errorf("volume name %q: the prefix %q is reserved for volumes berth injects", v.Name,
				reserved)
		}
	}
	for name, q := range in.cfg.HookLimits {
		if req, ok := in.opts.Resources.Requests[name]; ok && q.Cmp(req) < 0 {
			return bad(AnnoHookResources, name.String()+"="+q.String(),
				"the %s limit is below the hook containers' request %s (webhook flag --hook-requests)", name,
				req.String())
		}
	}
	if in.cfg.Debug != "" && spec.HostNetwork {
		// The debug port and berth's proxy listen on 127.0.0.1, which for a hostNetwork pod is
		// the node's loopback: every process on the node could attach a debugger to the app.
		return bad(AnnoDebug, string(in.cfg.Debug),
			"the pod uses hostNetwork, where the debugger would listen on the node's loopback for every "+
				"process of the node; debug mode is refused for hostNetwork pods, remove %s or hostNetwork",
			AnnoDebug)
	}
	if err := in.checkPorts(); err != nil {
		return err
	}
	if err := in.checkMounts(); err != nil {
		return err
	}
	if in.cfg.PreOnline {
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if spec.TerminationGracePeriodSeconds != nil {
			grace = *spec.TerminationGracePeriodSeconds
		}
		// The grace period covers preStop (drain) and the app's own shutdown after SIGTERM.
		if left := time.Duration(grace)*time.Second - in.cfg.Drain; left < MinShutdownAfterDrain {
			return bad(AnnoDrain, in.cfg.Drain.String(),
				"leaves the app %s between SIGTERM and the kill at terminationGracePeriodSeconds (%ds); it "+
					"needs at least %s for a safe shutdown: lower the drain to at most %s or raise "+
					"terminationGracePeriodSeconds to at least %d",
				max(left, 0), grace, MinShutdownAfterDrain,
				max(time.Duration(grace)*time.Second-MinShutdownAfterDrain, 0),
				int64((in.cfg.Drain+MinShutdownAfterDrain+time.Second-1)/time.Second))
		}
	}
	if in.cfg.PreOnline || in.cfg.Debug != "" {
		check, err := in.resolveCheckURL()
		if err != nil {
			return err
		}
		in.check = check
	}
	return nil
}

// checkPorts refuses a pod whose containers already use a port the sidecar needs.
func (in *injection) checkPorts() error {
	want := map[int]string{}
	if in.cfg.PreOnline || in.cfg.Debug != "" {
		want[in.opts.HealthPort] = "the berth sidecar's health port (webhook flag --sidecar-health-port)"
	}
	if in.cfg.Debug != "" {
		want[in.cfg.DebugProxyPort] = AnnoDebugProxyPort
	}
	for _, c := range in.pod.Spec.Containers {
		for _, p := range c.Ports {
			if what, ok := want[int(p.ContainerPort)]; ok {
				if what == AnnoDebugProxyPort {
					return bad(AnnoDebugProxyPort, strconv.Itoa(in.cfg.DebugProxyPort),
						"container %q already uses that port", c.Name)
				}
				return fmt.Errorf("container %q port %d: already used by %s", c.Name, p.ContainerPort, what)
			}
		}
	}
	return nil
}

// checkMounts refuses mount paths that would clash with what berth mounts:
// the apiserver would refuse the mutated pod with a "must be unique" error naming no berth key.
func (in *injection) checkMounts() error {
	used := map[string]bool{}
	for _, m := range in.app.VolumeMounts {
		used[m.MountPath] = true
		// preStart and a preOnline script run in copies of the app container, which also get berth's
		// /berth/* mounts.
		if (in.cfg.PreStart != nil || in.cfg.PreOnline) && inBerthDir(m.MountPath) {
			key := AnnoPreStart
			if in.cfg.PreStart == nil {
				key = AnnoPreOnline
			}
			return fmt.Errorf("container %q mounts volume %q at %s: with %s, %s is reserved for the "+
				"volumes berth injects; mount it elsewhere, e.g. /app%s", in.app.Name, m.Name, m.MountPath, key,
				berthDir, m.MountPath)
		}
	}
	for _, sv := range in.cfg.Volumes {
		if used[sv.MountPath] {
			return bad(AnnoVolumes, sv.Name+":"+sv.MountPath, "container %q already mounts something at %s",
				in.app.Name, sv.MountPath)
		}
		used[sv.MountPath] = true
	}
	if in.cfg.PreOnline && used[path.Dir(in.cfg.Marker)] {
		return bad(AnnoOnlineMarker, in.cfg.Marker,
			"container %q already mounts something at %s; pick a marker in a directory of its own",
			in.app.Name, path.Dir(in.cfg.Marker))
	}
	// A preOnline script runs in the sidecar with berth's writable /tmp, which the marker's emptyDir
	// would collide with.
	if in.cfg.PreOnlineScript != nil && path.Dir(in.cfg.Marker) == "/tmp" {
		return bad(AnnoOnlineMarker, in.cfg.Marker,
			"with a %s script, /tmp is the script's scratch directory in %s; give the marker a directory "+
				"of its own", AnnoPreOnline, SidecarName)
	}
	return nil
}

// probeTarget is what the sidecar GETs: a URL and the headers ("Name: value") to send.
type probeTarget struct {
	url     string
	headers []string
}

func (t probeTarget) equal(o probeTarget) bool {
	return t.url == o.url && slices.Equal(t.headers, o.headers)
}

// resolveCheckURL uses berth.dev/check-url, or else the app's readiness or liveness httpGet probe.
func (in *injection) resolveCheckURL() (probeTarget, error) {
	if in.cfg.CheckURL != "" {
		return probeTarget{url: in.cfg.CheckURL}, nil
	}
	for _, p := range []*corev1.Probe{in.app.ReadinessProbe, in.app.LivenessProbe} {
		if t, ok := in.probeURL(p); ok {
			return t, nil
		}
	}
	feature := AnnoPreOnline
	if !in.cfg.PreOnline {
		feature = AnnoDebug
	}
	return probeTarget{}, bad(AnnoCheckURL, "",
		"%s needs the app's check URL: set this annotation or give container %q an httpGet readiness or "+
			"liveness probe", feature, in.app.Name)
}

// probeURL is what an httpGet probe checks, as the kubelet would: its host (default the pod
// itself, here its loopback), its path with any query, and its httpHeaders.
func (in *injection) probeURL(p *corev1.Probe) (probeTarget, bool) {
	if p == nil || p.HTTPGet == nil {
		return probeTarget{}, false
	}
	port, ok := in.portNumber(p.HTTPGet.Port)
	if !ok {
		return probeTarget{}, false
	}
	scheme := "http"
	if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	host := "127.0.0.1"
	if p.HTTPGet.Host != "" {
		host = p.HTTPGet.Host
	}
	// The kubelet appends the path as written (a query included): a url.URL Path would escape "?".
	pth, query, _ := strings.Cut(p.HTTPGet.Path, "?")
	if !strings.HasPrefix(pth, "/") {
		pth = "/" + pth
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: pth,
		RawQuery: query}
	t := probeTarget{url: u.String()}
	for _, h := range p.HTTPGet.HTTPHeaders {
		t.headers = append(t.headers, h.Name+": "+h.Value)
	}
	return t, true
}

func (in *injection) portNumber(p intstr.IntOrString) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), p.IntValue() > 0
	}
	for _, cp := range in.app.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

func (in *injection) addVolume(name string, src corev1.VolumeSource) {
	in.pod.Spec.Volumes = append(in.pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: src})
	in.status.Volumes = append(in.status.Volumes, name)
}

// addSharedVolumes adds berth.dev/volumes to the pod and mounts them in the app.
func (in *injection) addSharedVolumes() {
	for _, sv := range in.cfg.Volumes {
		src := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		if sv.Kind == VolumePVC {
			src = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: sv.ClaimName}}
		}
		in.addVolume(sv.Name, src)
	}
	if len(in.cfg.Volumes) > 0 {
		in.status.Features = append(in.status.Features, "volumes")
	}
	in.app.VolumeMounts = append(in.app.VolumeMounts, in.sharedMounts()...)
}

func (in *injection) sharedMounts() []corev1.VolumeMount {
	var out []corev1.VolumeMount
	for _, sv := range in.cfg.Volumes {
		out = append(out, corev1.VolumeMount{Name: sv.Name, MountPath: sv.MountPath, ReadOnly: sv.ReadOnly})
	}
	return out
}

// mutateAppForPreOnline mounts the marker directory into the app and makes
// its preStop remove the marker and wait the drain period before SIGTERM.
func (in *injection) mutateAppForPreOnline() error {
	in.app.VolumeMounts = append(in.app.VolumeMounts,
		corev1.VolumeMount{Name: volOnline, MountPath: path.Dir(in.cfg.Marker)},
		corev1.VolumeMount{Name: volBin, MountPath: BinDir, ReadOnly: true})
	cmd := []string{hookPath, "prestop", "--marker=" + in.cfg.Marker, "--drain=" + in.cfg.Drain.String()}
	if in.app.Lifecycle == nil {
		in.app.Lifecycle = &corev1.Lifecycle{}
	}
	if old := in.app.Lifecycle.PreStop; old != nil {
		switch {
		case old.Exec != nil:
			cmd = append(append(cmd, "--"), old.Exec.Command...)
		case old.Sleep != nil:
			cmd = append(cmd, "--then-sleep="+strconv.FormatInt(old.Sleep.Seconds, 10)+"s")
		default:
			return bad(AnnoPreOnline, "", "container %q already has an httpGet/tcpSocket preStop hook; "+
				"berth chains only exec and sleep preStop hooks, make it an exec hook", in.app.Name)
		}
	}
	in.app.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: cmd}}
	return nil
}

// mutateAppForDebug switches on the app's debugger and points its liveness
// probe at the sidecar's debug-aware /livez.
func (in *injection) mutateAppForDebug() error {
	if in.cfg.Debug == DebugJava {
		jdwp := "-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=127.0.0.1:" + strconv.Itoa(in.cfg.DebugPort)
		found := false
		for i := range in.app.Env {
			e := &in.app.Env[i]
			if e.Name != "JAVA_TOOL_OPTIONS" {
				continue
			}
			if e.ValueFrom != nil {
				return bad(AnnoDebug, string(in.cfg.Debug),
					"container %q sets JAVA_TOOL_OPTIONS from a reference; berth can only append to a literal "+
						"value", in.app.Name)
			}
			e.Value = strings.TrimSpace(e.Value + " " + jdwp)
			found = true
		}
		if !found {
			in.app.Env = append(in.app.Env, corev1.EnvVar{Name: "JAVA_TOOL_OPTIONS", Value: jdwp})
		}
	}
	if p := in.app.LivenessProbe; p != nil {
		p.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/livez", Port: intstr.FromInt32(int32(in.opts.HealthPort)), Scheme: corev1.URISchemeHTTP,
		}}
	}
	return nil
}

// record writes the status annotation and the injected label.
func (in *injection) record() error {
	b, err := json.Marshal(in.status)
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", AnnoStatus, err)
	}
	if in.pod.Annotations == nil {
		in.pod.Annotations = map[string]string{}
	}
	in.pod.Annotations[AnnoStatus] = string(b)
	if in.pod.Labels == nil {
		in.pod.Labels = map[string]string{}
	}
	in.pod.Labels[LabelInjected] = "true"
	return nil
}
