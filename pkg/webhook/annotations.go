package webhook

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/wellknown"
)

// Prefix is the annotation (and label) prefix of every berth knob.
const Prefix = wellknown.Prefix

// Annotation keys app teams set on a pod template.
const (
	AnnoContainer        = Prefix + "container"
	AnnoPreStart         = Prefix + "prestart"
	AnnoPreStartAttempts = Prefix + "prestart-attempts"
	AnnoPreStartBackoff  = Prefix + "prestart-backoff"
	AnnoPreStartDeadline = Prefix + "prestart-deadline"
	AnnoPreOnline        = Prefix + "preonline"
	AnnoCheckURL         = Prefix + "check-url"
	AnnoOnlineMarker     = Prefix + "online-marker"
	AnnoDrain            = Prefix + "drain"
	AnnoVolumes          = Prefix + "volumes"
	AnnoDebug            = Prefix + "debug"
	AnnoDebugPort        = Prefix + "debug-port"
	AnnoDebugProxyPort   = Prefix + "debug-proxy-port"
	AnnoShell            = Prefix + "shell"
	AnnoHookResources    = Prefix + "hook-resources"
	AnnoAfter            = Prefix + "after"
	AnnoAfterReady       = Prefix + "after-ready"
	AnnoAfterTimeout     = Prefix + "after-timeout"
	// AnnoStatus is written by the webhook: what it injected. A pod carrying it is never mutated again.
	AnnoStatus = Prefix + "status"
	// LabelInjected is set on mutated pods so the PreStartReporter and the AfterController watch only
	// those.
	LabelInjected = Prefix + "injected"
	// LabelOptIn=OptInValue on a namespace sends its pods to the webhook; on a pod it says the
	// pod uses the webhook, which is then required (failurePolicy Fail). A pod without it never
	// waits for the webhook, so an outage does not stop pods that do not use berth.
	LabelOptIn = Prefix + "inject"
	OptInValue = "enabled"
)

// Defaults of the knobs.
const (
	DefaultMarker          = "/berth/online/healthcheck.html"
	DefaultDrain           = 10 * time.Second
	DefaultPreStartTries   = 3
	DefaultPreStartBackoff = 2 * time.Second
	DefaultPreStartLimit   = 5 * time.Minute
	DefaultDebugPort       = 5005
	DefaultDebugProxyPort  = 15105
	DefaultShell           = "/bin/sh"
	// DebugProxyHost is where the debug proxy listens: the pod's loopback, reached by kubectl
	// port-forward.
	DebugProxyHost = "127.0.0.1"
	// NoScript as the preonline value turns preOnline on without a script: the marker is written once
	// the check URL answers 2xx.
	NoScript = "none"
)

// ScriptKind says where a hook script comes from.
type ScriptKind string

// Script sources.
const (
	ScriptInline    ScriptKind = "inline"
	ScriptFile      ScriptKind = "file"
	ScriptConfigMap ScriptKind = "configmap"
)

// Script is a parsed hook script source.
type Script struct {
	Kind ScriptKind
	// Inline is the script text (inline), Path the file in the app image (file).
	Inline, Path string
	// ConfigMap and Key name the ConfigMap entry (configmap).
	ConfigMap, Key string
}

// DebugMode selects how debugging is switched on in the app.
type DebugMode string

// Debug modes.
const (
	DebugJava DebugMode = "java"
	DebugPort DebugMode = "port"
)

// VolumeKind is the source of a shared volume.
type VolumeKind string

// Shared volume sources.
const (
	VolumeEmptyDir VolumeKind = "emptydir"
	VolumePVC      VolumeKind = "pvc"
)

// SharedVolume is one entry of berth.dev/volumes.
type SharedVolume struct {
	Name, MountPath, ClaimName string
	Kind                       VolumeKind
	ReadOnly                   bool
}

// Config is everything the annotations of one pod ask for. The zero value asks for nothing.
type Config struct {
	Container string

	PreStart         *Script
	PreStartAttempts int
	PreStartBackoff  time.Duration
	PreStartDeadline time.Duration

	PreOnline bool
	// PreOnlineScript is nil for "none" (marker only).
	PreOnlineScript *Script
	CheckURL        string
	Marker          string
	Drain           time.Duration

	Volumes []SharedVolume

	Debug          DebugMode
	DebugPort      int
	DebugProxyPort int

	Shell string

	// HookLimits override the limits of berth-prestart and berth-sidecar (the containers running scripts).
	HookLimits corev1.ResourceList

	// After are the Services the pod waits for (berth.dev/after), each with AfterReady ready endpoints.
	After        []ServiceRef
	AfterReady   int
	AfterTimeout time.Duration
	// AfterHolds is set by the handler when every Service of After is ready at admission: no gate.
	AfterHolds bool
}

// Enabled reports whether the annotations ask for any injection at all.
func (c *Config) Enabled() bool {
	return c.PreStart != nil || c.PreOnline || c.Debug != "" || len(c.Volumes) > 0 || len(c.After) > 0
}

// keyExamples holds a valid example per key; error messages quote it.
var keyExamples = map[string]string{
	AnnoContainer:        `app`,
	AnnoPreStart:         `inline:echo preparing; mkdir -p /data/cache`,
	AnnoPreStartAttempts: `3`,
	AnnoPreStartBackoff:  `2s`,
	AnnoPreStartDeadline: `5m`,
	AnnoPreOnline:        `configmap:app-hooks/preonline.sh`,
	AnnoCheckURL:         `http://127.0.0.1:8080/healthz`,
	AnnoOnlineMarker:     DefaultMarker,
	AnnoDrain:            `15s`,
	AnnoVolumes:          `cache=emptydir:/var/cache/app, shared=pvc/shared-data:/data:ro`,
	AnnoDebug:            `java`,
	AnnoDebugPort:        `5005`,
	AnnoDebugProxyPort:   `15105`,
	AnnoShell:            `/bin/bash`,
	AnnoHookResources:    `cpu=500m,memory=256Mi`,
	AnnoAfter:            `db, payments/api`,
	AnnoAfterReady:       `2`,
	AnnoAfterTimeout:     `10m`,
	AnnoStatus:           `(written by the webhook)`,
}

// KnownKeys returns the annotation keys the webhook understands, sorted.
func KnownKeys() []string {
	keys := make([]string, 0, len(keyExamples))
	for k := range keyExamples {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keyList prints a list of berth's own keys; unlike a user's value, bad does not clip it.
type keyList []string

func (l keyList) String() string { return strings.Join(l, ", ") }

// AnnotationError is a bad annotation: which key, what is wrong, and a valid example.
type AnnotationError struct {
	Key, Value, Problem string
}

func (e *AnnotationError) Error() string {
	ex := keyExamples[e.Key]
	if ex == "" {
		return fmt.Sprintf("annotation %q: %s", e.Key, e.Problem)
	}
	return fmt.Sprintf("annotation %q=%q: %s (example: %s: %q)", e.Key, e.Value, e.Problem, e.Key, ex)
}

// maxEcho is the most of a user's value an error message quotes: a denial (and the
// ReplicaSet Event that repeats it) must stay readable whatever size the annotation has.
const maxEcho = 120

// clip bounds a value quoted in an error message.
func clip(v string) string {
	if len(v) <= maxEcho {
		return v
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s...(%d more bytes)", v[:cut], len(v)-cut)
}

// bad is an AnnotationError; value and the arguments quoted in the problem are clipped.
func bad(key, value, format string, args ...any) error {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	return &AnnotationError{Key: key, Value: clip(value), Problem: fmt.Sprintf(format, args...)}
}

// ParseAnnotations reads the berth.dev/ annotations of a pod into a Config.
// Unknown berth.dev/ keys are errors (a typo must not be silently ignored);
// every error is an *AnnotationError.
func ParseAnnotations(annos map[string]string) (*Config, error) {
	c := &Config{
		PreStartAttempts: DefaultPreStartTries, PreStartBackoff: DefaultPreStartBackoff,
		PreStartDeadline: DefaultPreStartLimit, Marker: DefaultMarker, Drain: DefaultDrain,
		DebugPort: DefaultDebugPort, DebugProxyPort: DefaultDebugProxyPort, Shell: DefaultShell,
		AfterReady: DefaultAfterReady,
	}
	keys := make([]string, 0, len(annos))
	for k := range annos {
		if strings.HasPrefix(k, Prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // deterministic: the first bad key (alphabetically) is reported
	for _, k := range keys {
		if err := c.set(k, strings.TrimSpace(annos[k])); err != nil {
			return nil, err
		}
	}
	return c, c.validate(annos)
}

// OtherComponentKeys are berth.dev/ pod annotations that belong to other berth
// components; the webhook lets them through untouched instead of calling them
// typos.
var OtherComponentKeys = wellknown.SchedulerPodAnnotations

func (c *Config) set(k, v string) error {
	if _, ok := OtherComponentKeys[k]; ok {
		return nil
	}
	var err error
	switch k {
	case AnnoStatus:
	case AnnoContainer:
		if errs := validation.IsDNS1123Label(v); len(errs) > 0 {
			return bad(k, v, "not a container name: %s", strings.Join(errs, "; "))
		}
		c.Container = v
	case AnnoPreStart:
		c.PreStart, err = parseScript(k, v)
	case AnnoPreStartAttempts:
		c.PreStartAttempts, err = parseInt(k, v, 1, 10)
	case AnnoPreStartBackoff:
		c.PreStartBackoff, err = parseDuration(k, v, 100*time.Millisecond, 10*time.Minute)
	case AnnoPreStartDeadline:
		c.PreStartDeadline, err = parseDuration(k, v, time.Second, time.Hour)
	case AnnoPreOnline:
		c.PreOnline = true
		if !strings.EqualFold(v, NoScript) {
			if c.PreOnlineScript, err = parseScript(k, v); err != nil {
				var ae *AnnotationError
				if errors.As(err, &ae) {
					ae.Problem += fmt.Sprintf(", or %q for the marker without a script", NoScript)
				}
			}
		}
	case AnnoCheckURL:
		c.CheckURL, err = parseCheckURL(k, v)
	case AnnoOnlineMarker:
		c.Marker, err = parseMarker(k, v)
	case AnnoDrain:
		c.Drain, err = parseDuration(k, v, 0, 10*time.Minute)
	case AnnoVolumes:
		c.Volumes, err = parseVolumes(k, v)
	case AnnoDebug:
		switch DebugMode(strings.ToLower(v)) {
		case DebugJava, DebugPort:
			c.Debug = DebugMode(strings.ToLower(v))
		default:
			return bad(k, v, "unknown debug mode, want %q (JDWP through JAVA_TOOL_OPTIONS) or %q (the app "+
				"opens the debug port itself)", DebugJava, DebugPort)
		}
	case AnnoDebugPort:
		c.DebugPort, err = parseInt(k, v, 1, 65535)
	case AnnoDebugProxyPort:
		c.DebugProxyPort, err = parseInt(k, v, 1, 65535)
	case AnnoHookResources:
		c.HookLimits, err = parseHookLimits(k, v)
	case AnnoAfter:
		c.After, err = parseAfter(k, v)
	case AnnoAfterReady:
		c.AfterReady, err = parseInt(k, v, 1, maxAfterReady)
	case AnnoAfterTimeout:
		c.AfterTimeout, err = parseDuration(k, v, time.Second, maxAfterTimeout)
	case AnnoShell:
		if !path.IsAbs(v) || strings.ContainsAny(v, " \t\n") {
			return bad(k, v, "want the absolute path of a shell in the app image")
		}
		c.Shell = v
	default:
		return bad(k, "", "unknown berth annotation; known keys are %s", keyList(KnownKeys()))
	}
	return err
}

// validate checks combinations of keys.
func (c *Config) validate(annos map[string]string) error {
	// Keys that only qualify a feature must not make a pod look handled when no feature is on.
	if v, ok := annos[AnnoShell]; ok && c.PreStart == nil && c.PreOnlineScript == nil {
		return bad(AnnoShell, v, "only used to run %s or %s scripts; set one of them (a %s: %q "+
			"preOnline has no script)", AnnoPreStart, AnnoPreOnline, AnnoPreOnline, NoScript)
	}
	if v, ok := annos[AnnoHookResources]; ok && c.PreStart == nil && !c.PreOnline && c.Debug == "" {
		return bad(AnnoHookResources, v, "sets the limits of berth's hook containers, but none is "+
			"injected; add %s, %s or %s", AnnoPreStart, AnnoPreOnline, AnnoDebug)
	}
	if v, ok := annos[AnnoContainer]; ok && !c.Enabled() {
		return bad(AnnoContainer, v, "names the app container for a berth feature, but none is set; add "+
			"%s, %s, %s or %s", AnnoPreStart, AnnoPreOnline, AnnoDebug, AnnoVolumes)
	}
	_, hasCheck := annos[AnnoCheckURL]
	_, hasMarker := annos[AnnoOnlineMarker]
	_, hasDrain := annos[AnnoDrain]
	if !c.PreOnline && (hasMarker || hasDrain) {
		k := AnnoOnlineMarker
		if hasDrain {
			k = AnnoDrain
		}
		return bad(k, annos[k], "only meaningful with %s (set %s: %q to write the marker without a "+
			"script)", AnnoPreOnline, AnnoPreOnline, NoScript)
	}
	if !c.PreOnline && c.Debug == "" && hasCheck {
		return bad(AnnoCheckURL, annos[AnnoCheckURL], "only used by %s and %s; set one of them",
			AnnoPreOnline, AnnoDebug)
	}
	for _, k := range []string{AnnoPreStartAttempts, AnnoPreStartBackoff, AnnoPreStartDeadline} {
		if _, ok := annos[k]; ok && c.PreStart == nil {
			return bad(k, annos[k], "only meaningful with %s", AnnoPreStart)
		}
	}
	for _, k := range []string{AnnoAfterReady, AnnoAfterTimeout} {
		if _, ok := annos[k]; ok && len(c.After) == 0 {
			return bad(k, annos[k], "only meaningful with %s", AnnoAfter)
		}
	}
	for _, k := range []string{AnnoDebugPort, AnnoDebugProxyPort} {
		if _, ok := annos[k]; ok && c.Debug == "" {
			return bad(k, annos[k], "only meaningful with %s", AnnoDebug)
		}
	}
	if c.Debug != "" && c.DebugPort == c.DebugProxyPort {
		return bad(AnnoDebugProxyPort, strconv.Itoa(c.DebugProxyPort),
			"must differ from %s (%d): both listen on the pod's 127.0.0.1", AnnoDebugPort, c.DebugPort)
	}
	if c.PreStartBackoff > c.PreStartDeadline {
		return bad(AnnoPreStartBackoff, c.PreStartBackoff.String(),
			"longer than %s (%s): no retry could ever run", AnnoPreStartDeadline, c.PreStartDeadline)
	}
	return nil
}

// parseHookLimits reads "cpu=500m,memory=256Mi": positive cpu and/or memory limits.
func parseHookLimits(k, v string) (corev1.ResourceList, error) {
	rl, err := ParseResourceList(v)
	if err != nil {
		return nil, bad(k, v, "%v", err)
	}
	if len(rl) == 0 {
		return nil, bad(k, v, "no limits listed")
	}
	for name, q := range rl {
		if name != corev1.ResourceCPU && name != corev1.ResourceMemory {
			return nil, bad(k, v, "only cpu and memory limits can be set, not %s", name)
		}
		if q.Sign() <= 0 {
			return nil, bad(k, v, "the %s limit must be positive", name)
		}
	}
	return rl, nil
}

func parseInt(k, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, bad(k, v, "want an integer from %d to %d", lo, hi)
	}
	return n, nil
}

func parseDuration(k, v string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, bad(k, v, "not a duration (%v)", err)
	}
	if d < lo || d > hi {
		return 0, bad(k, v, "want a duration from %s to %s", lo, hi)
	}
	return d, nil
}

// parseScript reads "inline:<text>", "file:<absolute path>" or "configmap:<name>/<key>".
func parseScript(k, v string) (*Script, error) {
	kind, rest, ok := strings.Cut(v, ":")
	if !ok {
		return nil, bad(k, v, "want inline:<script>, file:<absolute path in the app image> or "+
			"configmap:<name>/<key>")
	}
	switch ScriptKind(strings.ToLower(kind)) {
	case ScriptInline:
		if strings.TrimSpace(rest) == "" {
			return nil, bad(k, v, "the inline script is empty")
		}
		return &Script{Kind: ScriptInline, Inline: rest}, nil
	case ScriptFile:
		if !path.IsAbs(rest) || path.Clean(rest) != rest {
			return nil, bad(k, v, "want a clean absolute path of a script in the app image")
		}
		return &Script{Kind: ScriptFile, Path: rest}, nil
	case ScriptConfigMap:
		name, key, ok := strings.Cut(rest, "/")
		if !ok || len(validation.IsDNS1123Subdomain(name)) > 0 || len(validation.IsConfigMapKey(key)) > 0 {
			return nil, bad(k, v, "want configmap:<ConfigMap name>/<key> with a valid name and key")
		}
		return &Script{Kind: ScriptConfigMap, ConfigMap: name, Key: key}, nil
	}
	return nil, bad(k, v, "unknown script source %q, want inline, file or configmap", kind)
}

// parseCheckURL accepts an http(s) URL of the pod itself, or the short form ":8080/path".
func parseCheckURL(k, v string) (string, error) {
	if strings.HasPrefix(v, ":") {
		v = "http://127.0.0.1" + v
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
		return "", bad(k, v, "want an http(s) URL with a port on the pod's loopback")
	}
	switch u.Hostname() {
	case "127.0.0.1", "localhost", "::1":
	default:
		return "", bad(k, v, "the check URL must point at the pod itself (127.0.0.1, localhost or ::1), "+
			"not %q", u.Hostname())
	}
	if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return "", bad(k, v, "port %q out of range", u.Port())
	}
	if u.Path == "" {
		u.Path = "/"
	}
	return u.String(), nil
}

func parseMarker(k, v string) (string, error) {
	if !path.IsAbs(v) || path.Clean(v) != v || path.Dir(v) == "/" || strings.ContainsAny(v, ":,") {
		return "", bad(k, v, "want a clean absolute file path below a directory (the directory becomes "+
			"a shared emptyDir)")
	}
	if d, ok := underReserved(path.Dir(v)); ok {
		return "", bad(k, v, "the marker's directory %s is inside %s, where berth mounts its own "+
			"volume; give the marker a directory of its own", path.Dir(v), d)
	}
	return v, nil
}

// reservedDirs are where berth mounts its own volumes in the containers running the app's image.
var reservedDirs = []string{BinDir, stateDir, scripts}

// underReserved reports the reserved directory p is (or is inside), if any.
func underReserved(p string) (string, bool) {
	for _, d := range reservedDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return d, true
		}
	}
	return "", false
}

// inBerthDir reports whether p is /berth or below it.
func inBerthDir(p string) bool { return p == berthDir || strings.HasPrefix(p, berthDir+"/") }

// parseVolumes reads "name=emptydir:/path[:ro], name=pvc/<claim>:/path[:ro]".
func parseVolumes(k, v string) ([]SharedVolume, error) {
	var out []SharedVolume
	seen := map[string]bool{}
	mounts := map[string]string{} // mount path -> volume name
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, rest, ok := strings.Cut(item, "=")
		parts := strings.Split(rest, ":")
		if !ok || len(parts) < 2 || len(parts) > 3 {
			return nil, bad(k, v, "entry %q: want name=emptydir:/path or name=pvc/<claim>:/path, "+
				"optionally ending in :ro", item)
		}
		sv := SharedVolume{Name: strings.TrimSpace(name), MountPath: parts[1]}
		if errs := validation.IsDNS1123Label(sv.Name); len(errs) > 0 || strings.HasPrefix(sv.Name, "berth-") {
			return nil, bad(k, v, "entry %q: volume name %q must be a DNS label not starting with berth-",
				item, sv.Name)
		}
		if seen[sv.Name] {
			return nil, bad(k, v, "volume name %q appears twice", sv.Name)
		}
		seen[sv.Name] = true
		src := strings.ToLower(parts[0])
		switch {
		case src == string(VolumeEmptyDir):
			sv.Kind = VolumeEmptyDir
		case strings.HasPrefix(src, "pvc/") && len(validation.IsDNS1123Subdomain(parts[0][4:])) == 0:
			sv.Kind, sv.ClaimName = VolumePVC, parts[0][4:]
		default:
			return nil, bad(k, v, "entry %q: source %q is neither emptydir nor pvc/<claim name>", item, parts[0])
		}
		if !path.IsAbs(sv.MountPath) || path.Clean(sv.MountPath) != sv.MountPath || sv.MountPath == "/" {
			return nil, bad(k, v, "entry %q: mount path %q must be a clean absolute path other than /", item,
				sv.MountPath)
		}
		if inBerthDir(sv.MountPath) {
			return nil, bad(k, v, "entry %q: mount path %q is inside %s, reserved for the volumes berth "+
				"injects (bin, state, scripts, online marker)", item, sv.MountPath, berthDir)
		}
		if mounts[sv.MountPath] != "" {
			return nil, bad(k, v, "volumes %q and %q are both mounted at %s", mounts[sv.MountPath], sv.Name,
				sv.MountPath)
		}
		mounts[sv.MountPath] = sv.Name
		if len(parts) == 3 {
			if parts[2] != "ro" {
				return nil, bad(k, v, "entry %q: the only option is ro", item)
			}
			sv.ReadOnly = true
		}
		out = append(out, sv)
	}
	if len(out) == 0 {
		return nil, bad(k, v, "no volumes listed")
	}
	return out, nil
}
