package webhook

import (
	"fmt"
	"net"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// nonRootUID is the user injected containers run as unless the app names its own non-root user.
const nonRootUID = 65532

// securityContext is the hardened context of every injected container:
// non-root user and group, read-only root filesystem, no capabilities, no privilege escalation.
func (in *injection) securityContext(appImage bool) *corev1.SecurityContext {
	uid, gid := int64(nonRootUID), int64(nonRootUID)
	// A hook running in the app's image runs as the app's user and group when they are non-root, so it
	// can read the app's files.
	if appImage {
		if sc := in.app.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser != 0 {
			uid = *sc.RunAsUser
		} else if psc := in.pod.Spec.SecurityContext; psc != nil && psc.RunAsUser != nil &&
			*psc.RunAsUser != 0 {
			uid = *psc.RunAsUser
		}
		if sc := in.app.SecurityContext; sc != nil && sc.RunAsGroup != nil && *sc.RunAsGroup != 0 {
			gid = *sc.RunAsGroup
		} else if psc := in.pod.Spec.SecurityContext; psc != nil && psc.RunAsGroup != nil &&
			*psc.RunAsGroup != 0 {
			gid = *psc.RunAsGroup
		}
	}
	return &corev1.SecurityContext{
		RunAsUser:                ptr.To(uid),
		RunAsGroup:               ptr.To(gid),
		RunAsNonRoot:             ptr.To(true),
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// hookResources are the resources of the containers running scripts and the
// sidecar: the webhook's, with the limits of berth.dev/hook-resources.
func (in *injection) hookResources() corev1.ResourceRequirements {
	r := *in.opts.Resources.DeepCopy()
	if len(in.cfg.HookLimits) > 0 && r.Limits == nil {
		r.Limits = corev1.ResourceList{}
	}
	for name, q := range in.cfg.HookLimits {
		r.Limits[name] = q
	}
	return r
}

func (in *injection) installContainer() corev1.Container {
	return corev1.Container{
		Name:                     InstallName,
		Image:                    in.opts.Image,
		Command:                  []string{in.opts.HookBinary, "install", "--to=" + hookPath},
		VolumeMounts:             []corev1.VolumeMount{{Name: volBin, MountPath: BinDir}},
		Resources:                in.opts.Resources,
		SecurityContext:          in.securityContext(false),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// scriptArgs returns the hook flags for a script and adds the ConfigMap volume it needs.
func (in *injection) scriptArgs(hook string, s *Script) ([]string, []corev1.VolumeMount) {
	args := []string{"--shell=" + in.cfg.Shell}
	switch s.Kind {
	case ScriptInline:
		return append(args, "--script="+s.Inline), nil
	case ScriptFile:
		return append(args, "--script-file="+s.Path), nil
	}
	vol := fmt.Sprintf(volScriptFmt, hook)
	in.addVolume(vol, corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: s.ConfigMap},
		Items:                []corev1.KeyToPath{{Key: s.Key, Path: "script"}},
		DefaultMode:          ptr.To(int32(0o555)),
	}})
	dir := path.Join(scripts, hook)
	return append(args, "--script-file="+path.Join(dir, "script")),
		[]corev1.VolumeMount{{Name: vol, MountPath: dir, ReadOnly: true}}
}

// appLikeContainer returns a container running berth-hook from the shared
// bin volume inside the app's image, with the app's environment and mounts,
// so a script sees what the app sees.
func (in *injection) appLikeContainer(name string) corev1.Container {
	c := corev1.Container{
		Name:                     name,
		Image:                    in.app.Image,
		ImagePullPolicy:          in.app.ImagePullPolicy,
		Command:                  []string{hookPath},
		Env:                      append([]corev1.EnvVar(nil), in.app.Env...),
		EnvFrom:                  append([]corev1.EnvFromSource(nil), in.app.EnvFrom...),
		WorkingDir:               in.app.WorkingDir,
		VolumeMounts:             append([]corev1.VolumeMount(nil), in.app.VolumeMounts...),
		Resources:                in.hookResources(),
		SecurityContext:          in.securityContext(true),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volBin, MountPath: BinDir,
		ReadOnly: true})
	in.addTmp(&c)
	return c
}

// addTmp gives a read-only-root container a writable /tmp unless it already mounts one.
func (in *injection) addTmp(c *corev1.Container) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/tmp" {
			return
		}
	}
	if !in.hasVolume(volTmp) {
		in.addVolume(volTmp, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volTmp, MountPath: "/tmp"})
}

func (in *injection) hasVolume(name string) bool {
	for _, v := range in.pod.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func (in *injection) preStartContainer() corev1.Container {
	c := in.appLikeContainer(PreStartName)
	in.addVolume(volState, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volState, MountPath: stateDir})
	args, mounts := in.scriptArgs("prestart", in.cfg.PreStart)
	c.Args = append([]string{"prestart",
		"--attempts=" + strconv.Itoa(in.cfg.PreStartAttempts),
		"--backoff=" + in.cfg.PreStartBackoff.String(),
		"--deadline=" + in.cfg.PreStartDeadline.String(),
		"--state=" + path.Join(stateDir, "prestart.json"),
	}, args...)
	c.VolumeMounts = append(c.VolumeMounts, mounts...)
	// The hook writes its final failure to /dev/termination-log; the reporter turns it into an Event.
	c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	return c
}

// sidecarContainer is the native sidecar: preOnline, the marker, /livez and the debug proxy.
func (in *injection) sidecarContainer() (corev1.Container, error) {
	var c corev1.Container
	var extra []string
	if in.cfg.PreOnline && in.cfg.PreOnlineScript != nil {
		// A preOnline script runs in the app's image: its shell, its tools, its env.
		c = in.appLikeContainer(SidecarName)
		args, mounts := in.scriptArgs("preonline", in.cfg.PreOnlineScript)
		extra = args
		c.VolumeMounts = append(c.VolumeMounts, mounts...)
	} else {
		c = corev1.Container{
			Name: SidecarName, Image: in.opts.Image, Command: []string{in.opts.HookBinary},
			Resources: in.hookResources(), SecurityContext: in.securityContext(false),
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			VolumeMounts:             in.sharedMounts(),
		}
	}
	c.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	health := intstr.FromInt32(int32(in.opts.HealthPort))
	c.Args = []string{"sidecar", "--listen=:" + health.String(), "--check-url=" + in.check.url}
	for _, h := range in.check.headers {
		c.Args = append(c.Args, "--check-header="+h)
	}
	c.Args = append(c.Args, extra...)
	// The rewritten liveness probe keeps checking what the app's own liveness probe checked
	// (a readiness URL may fail for reasons that must not restart the app).
	if live, ok := in.probeURL(in.app.LivenessProbe); ok && in.cfg.Debug != "" && !live.equal(in.check) {
		c.Args = append(c.Args, "--live-url="+live.url)
		for _, h := range live.headers {
			c.Args = append(c.Args, "--live-header="+h)
		}
	}
	c.Ports = append(c.Ports, corev1.ContainerPort{Name: "berth-health",
		ContainerPort: int32(in.opts.HealthPort), Protocol: corev1.ProtocolTCP})
	ready := "/readyz"
	if in.cfg.PreOnline {
		ready = "/online"
		c.Args = append(c.Args, "--marker="+in.cfg.Marker)
		in.addVolume(volOnline, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volOnline,
			MountPath: path.Dir(in.cfg.Marker)})
	}
	if in.cfg.Debug != "" {
		// Loopback only: a debugger attached to the app can run any code in it, so the proxy is
		// reachable through `kubectl port-forward` (which needs pods/portforward RBAC), never from other
		// pods.
		c.Args = append(c.Args, "--debug-listen="+net.JoinHostPort(DebugProxyHost,
			strconv.Itoa(in.cfg.DebugProxyPort)),
			"--debug-target=127.0.0.1:"+strconv.Itoa(in.cfg.DebugPort))
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "berth-debug",
			ContainerPort: int32(in.cfg.DebugProxyPort), Protocol: corev1.ProtocolTCP})
	}
	// The pod is Ready only when the sidecar is: with preOnline that means "marker written".
	// No startupProbe: the app starts after the sidecar has started, so one waiting for the app would
	// deadlock.
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ready, Port: health}},
		PeriodSeconds: 2, FailureThreshold: 1, SuccessThreshold: 1, TimeoutSeconds: 1,
	}
	c.LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: health}},
		PeriodSeconds: 10, FailureThreshold: 3, SuccessThreshold: 1, TimeoutSeconds: 1,
	}
	return c, nil
}
