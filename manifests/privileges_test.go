// Package manifests holds no code: its tests render the kustomize bases an admin applies and
// fail on a privilege that docs/operations.md ("Privileges and why") does not justify.
package manifests

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// allowance justifies one finding. Every permanent one names the heading of
// docs/operations.md's "Privileges and why" that explains it.
type allowance struct {
	why string // one line: what breaks without it
	doc string // a "### " heading under "## Privileges and why" in docs/operations.md
	// pendingFix marks a temporary entry: the finding is fixed in another branch, and the
	// entry goes when that branch is merged (the test then fails on it as stale).
	pendingFix string
}

// allowed is every privilege berth's manifests hold on purpose, keyed by the finding's text.
var allowed = map[string]allowance{
	// cni-vlan: the pod network does not exist until it has installed it.
	"DaemonSet berth-system/cni-vlan: hostNetwork": {
		why: "the pod network does not exist until this pod has installed it", doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: container install adds capability DAC_OVERRIDE": {
		why: "writes the plugin and its conflist into the node's root-owned CNI directories",
		doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: container install adds capability NET_ADMIN": {
		why: "with hostGateway the node joins the VLAN at install: bridge, trunk, tc programs, gateway",
		doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: container install adds capability BPF": {
		why: "loads the tc-bpf datapath's programs and map when the node joins the VLAN",
		doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: container install adds capability SYS_ADMIN": {
		why: "finds its tc BPF programs and their map again by id (BPF_PROG_GET_FD_BY_ID)",
		doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: writable hostPath /run/berth": {
		why: "the node lock the plugin takes while it plumbs the VLAN", doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: writable hostPath /var/lib/berth/ipam-agent": {
		why: "the IPAM agent's crash-safe journal and buffer outlive a restart and a reboot",
		doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: writable hostPath /opt/cni/bin": {
		why: "the container runtime runs the plugin binary from there", doc: "cni-vlan"},
	"DaemonSet berth-system/cni-vlan: writable hostPath /etc/cni/net.d": {
		why: "the conflist and the etcd client files the plugin reads", doc: "cni-vlan"},

	// p2p-puller: a registry mirror on the node's loopback that containerd uses.
	"DaemonSet berth-system/p2p-puller: hostNetwork": {
		why: "containerd reaches the mirror on the node's 127.0.0.1; peers on the node address",
		doc: "p2p-puller"},
	"DaemonSet berth-system/p2p-puller: writable hostPath /etc/containerd/certs.d": {
		why: "writes <registry>/hosts.toml so containerd pulls through the node's mirror",
		doc: "p2p-puller"},
	"Role berth-system/p2p-puller-keygen: creates secrets": {
		why: "a one-shot Job creates the peer key Secret once; create cannot be limited by name",
		doc: "p2p-puller"},
	"DaemonSet berth-system/p2p-puller: writable hostPath /var/lib/berth/p2p": {
		why: "the layer cache survives a restart of the puller", doc: "p2p-puller"},

	// csi-sharedfs controller: FUSE mounts next to glusterd.
	"Deployment berth-system/csi-sharedfs-controller: hostNetwork": {
		why: "the FUSE client reaches glusterd and the bricks by the node's names and address",
		doc: "csi-sharedfs controller"},
	"Deployment berth-system/csi-sharedfs-controller: container csi-sharedfs is privileged": {
		why: "FUSE mounts need /dev/fuse in the device cgroup, which only privileged grants",
		doc: "csi-sharedfs controller"},
	"Deployment berth-system/csi-sharedfs-controller: writable hostPath /var/run/glusterd.socket": {
		why: "the gluster CLI connects to glusterd's management socket (quotas, volumes)",
		doc: "csi-sharedfs controller"},
	"Deployment berth-system/csi-sharedfs-controller: writable hostPath /dev/fuse": {
		why: "the GlusterFS FUSE client opens it to mount a volume", doc: "csi-sharedfs controller"},

	// csi-sharedfs node: mounts volumes into pods.
	"DaemonSet berth-system/csi-sharedfs-node: hostNetwork": {
		why: "the FUSE clients reach glusterd and the bricks by the node's names and address",
		doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: hostPID": {
		why: "the mounts' FUSE daemons move to a host cgroup and outlive the plugin",
		doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: container csi-sharedfs is privileged": {
		why: "Bidirectional mount propagation into the kubelet's dir requires it",
		doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: writable hostPath /var/lib/kubelet": {
		why: "pod volumes are mounted under the kubelet's pods directory", doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: writable hostPath /var/lib/berth/csi-sharedfs": {
		why: "one GlusterFS mount per node and volume, shared by its pods", doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: writable hostPath /dev/fuse": {
		why: "the GlusterFS client and the IO-limit layer are FUSE filesystems",
		doc: "csi-sharedfs node"},
	"DaemonSet berth-system/csi-sharedfs-node: writable hostPath /sys/fs/cgroup": {
		why: "moves the FUSE daemons to a cgroup of their own", doc: "csi-sharedfs node"},

	// berth-scheduler: the built-in roles it uses as they are.
	"ClusterRoleBinding berth-scheduler-as-volume-scheduler: binds ClusterRole " +
		"system:volume-scheduler, defined outside manifests/": {
		why: "binds PVCs to PVs while scheduling, as kube-scheduler does", doc: "berth-scheduler"},
	"ClusterRoleBinding berth-scheduler-auth-delegator: binds ClusterRole system:auth-delegator, " +
		"defined outside manifests/": {
		why: "authenticates and authorizes requests to its secure /metrics port",
		doc: "berth-scheduler"},
	"RoleBinding kube-system/berth-scheduler-authentication-reader: binds Role " +
		"kube-system/extension-apiserver-authentication-reader, defined outside manifests/": {
		why: "reads the client CA of its secure port", doc: "berth-scheduler"},

	// berth-webhook: its certificate Secret and its MutatingWebhookConfiguration's caBundle.
	"ClusterRole berth-webhook: writes mutatingwebhookconfigurations": {
		why: "keeps the caBundle of its own configuration (resourceNames) current as it rotates its CA;" +
			" a ValidatingAdmissionPolicy lets it change nothing else", doc: "berth-webhook"},
}

// TestManifestPrivileges renders manifests/ as `kubectl apply -k manifests/` does and fails on
// every privilege that has no allow-list entry, and on every entry that no longer matches.
func TestManifestPrivileges(t *testing.T) {
	objs := render(t, ".")
	if len(objs) < 20 {
		t.Fatalf("rendered only %d objects from manifests/: is the kustomization complete?", len(objs))
	}
	findings := findingsOf(t, objs)
	headings := privilegeHeadings(t, "../docs/operations.md")
	for _, f := range sortedKeys(findings) {
		a, ok := allowed[f]
		switch {
		case !ok:
			t.Errorf("%s: not justified; narrow it, or add it to `allowed` with a reason and a "+
				"section of docs/operations.md \"Privileges and why\"", f)
		case a.pendingFix != "":
			t.Logf("PENDING %s (%s)", f, a.pendingFix)
		}
	}
	for _, k := range sortedKeys(allowed) {
		a := allowed[k]
		if !findings[k] {
			t.Errorf("allowed[%q] matches nothing in manifests/: remove the entry", k)
		}
		if a.pendingFix != "" {
			continue
		}
		if a.why == "" || !headings[a.doc] {
			t.Errorf("allowed[%q]: needs a reason and doc naming a \"### \" heading under "+
				"\"## Privileges and why\" in docs/operations.md (have %q)", k, a.doc)
		}
	}
}

// object is one rendered manifest: its identity and the YAML to decode by kind.
type object struct {
	kind, namespace, name string
	yaml                  []byte
}

func (o object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

// render runs kustomize's Go API (what `kubectl apply -k` embeds) on dir.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s %s: %v", r.GetKind(), r.GetName(), err)
		}
		objs = append(objs, object{kind: r.GetKind(), namespace: r.GetNamespace(),
			name: r.GetName(), yaml: b})
	}
	return objs
}

// definedRoles returns the roles manifests/ defines, as a binding's roleRef names them.
func definedRoles(objs []object) map[string]bool {
	roles := map[string]bool{}
	for _, o := range objs {
		if o.kind == "Role" || o.kind == "ClusterRole" {
			roles[o.String()] = true
		}
	}
	return roles
}

// inspect returns the findings of one object: RBAC rules for roles, the roles a binding grants
// that manifests/ does not define (so this test cannot read them), pod security for workloads.
func inspect(o object, roles map[string]bool) ([]string, error) {
	switch o.kind {
	case "RoleBinding", "ClusterRoleBinding":
		var b rbacv1.RoleBinding // a ClusterRoleBinding has the same roleRef field
		if err := yaml.Unmarshal(o.yaml, &b); err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
		ref := object{kind: b.RoleRef.Kind, name: b.RoleRef.Name}
		if ref.kind == "Role" {
			ref.namespace = o.namespace
		}
		if !roles[ref.String()] {
			return []string{fmt.Sprintf("%s: binds %s, defined outside manifests/", o, ref)}, nil
		}
		return nil, nil
	case "Role", "ClusterRole":
		var r rbacv1.ClusterRole // a Role has the same rules field
		if err := yaml.Unmarshal(o.yaml, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
		return ruleFindings(o, r.Rules), nil
	case "Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob":
		spec, err := podSpec(o)
		if err != nil {
			return nil, err
		}
		return podFindings(o, spec), nil
	}
	return nil, nil
}

func podSpec(o object) (*corev1.PodSpec, error) {
	var spec *corev1.PodSpec
	var err error
	switch o.kind {
	case "Pod":
		spec, err = decodeSpec(o.yaml, func(p *corev1.Pod) *corev1.PodSpec { return &p.Spec })
	case "Deployment":
		spec, err = decodeSpec(o.yaml,
			func(d *appsv1.Deployment) *corev1.PodSpec { return &d.Spec.Template.Spec })
	case "DaemonSet":
		spec, err = decodeSpec(o.yaml,
			func(d *appsv1.DaemonSet) *corev1.PodSpec { return &d.Spec.Template.Spec })
	case "StatefulSet":
		spec, err = decodeSpec(o.yaml,
			func(s *appsv1.StatefulSet) *corev1.PodSpec { return &s.Spec.Template.Spec })
	case "ReplicaSet":
		spec, err = decodeSpec(o.yaml,
			func(r *appsv1.ReplicaSet) *corev1.PodSpec { return &r.Spec.Template.Spec })
	case "Job":
		spec, err = decodeSpec(o.yaml,
			func(j *batchv1.Job) *corev1.PodSpec { return &j.Spec.Template.Spec })
	case "CronJob":
		spec, err = decodeSpec(o.yaml, func(c *batchv1.CronJob) *corev1.PodSpec {
			return &c.Spec.JobTemplate.Spec.Template.Spec
		})
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return spec, nil
}

func decodeSpec[T any](b []byte, spec func(*T) *corev1.PodSpec) (*corev1.PodSpec, error) {
	var v T
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return spec(&v), nil
}

var (
	readVerbs  = []string{"get", "list", "watch"}
	writeVerbs = []string{"update", "patch", "delete", "deletecollection"}
	// Verbs that hand out more than the role holds.
	escalatingVerbs = []string{"escalate", "bind", "impersonate"}
)

// ruleFindings checks RBAC rules. `create` cannot be limited by resourceNames (the object has
// no name yet when the request is authorized), so a create of a Lease or Endpoints is not a
// finding; a Secret create is, since it lets the holder store data in the namespace.
func ruleFindings(o object, rules []rbacv1.PolicyRule) []string {
	var out []string
	add := func(format string, a ...any) {
		out = append(out, o.String()+": "+fmt.Sprintf(format, a...))
	}
	for _, r := range rules {
		for _, field := range [][]string{r.Verbs, r.Resources, r.APIGroups, r.NonResourceURLs} {
			if slices.Contains(field, "*") {
				add("wildcard in %s", ruleString(r))
			}
		}
		for _, v := range escalatingVerbs {
			if slices.Contains(r.Verbs, v) {
				add("grants %s", v)
			}
		}
		if len(r.ResourceNames) > 0 && slices.Contains(r.Verbs, "create") {
			add("resourceNames on create never match (%s)", ruleString(r))
		}
		named := len(r.ResourceNames) > 0
		if grants(r, "", "secrets", readVerbs) {
			switch {
			case o.kind == "ClusterRole":
				add("reads secrets cluster-wide")
			case !named:
				add("reads secrets without resourceNames")
			}
		}
		if grants(r, "", "secrets", []string{"create"}) {
			add("creates secrets")
		}
		if grants(r, "", "secrets", writeVerbs) && !named {
			add("writes secrets without resourceNames")
		}
		if grants(r, "coordination.k8s.io", "leases", writeVerbs) && !named {
			add("writes leases without resourceNames")
		}
		if grants(r, "", "endpoints", writeVerbs) && !named {
			add("writes endpoints without resourceNames")
		}
		for _, res := range []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"} {
			if grants(r, "admissionregistration.k8s.io", res, append([]string{"create"}, writeVerbs...)) {
				add("writes %s", res)
			}
		}
	}
	return out
}

// grants reports whether r allows any of verbs on resource in group (wildcards included).
func grants(r rbacv1.PolicyRule, group, resource string, verbs []string) bool {
	if !slices.Contains(r.APIGroups, group) && !slices.Contains(r.APIGroups, "*") {
		return false
	}
	if !slices.Contains(r.Resources, resource) && !slices.Contains(r.Resources, "*") {
		return false
	}
	return slices.Contains(r.Verbs, "*") || slices.ContainsFunc(verbs, func(v string) bool {
		return slices.Contains(r.Verbs, v)
	})
}

func ruleString(r rbacv1.PolicyRule) string {
	return fmt.Sprintf("apiGroups %v resources %v verbs %v nonResourceURLs %v",
		r.APIGroups, r.Resources, r.Verbs, r.NonResourceURLs)
}

// podFindings checks a pod template: host namespaces, privileged containers, added
// capabilities and hostPath volumes that some container mounts writable.
func podFindings(o object, spec *corev1.PodSpec) []string {
	var out []string
	add := func(format string, a ...any) {
		out = append(out, o.String()+": "+fmt.Sprintf(format, a...))
	}
	if spec.HostNetwork {
		add("hostNetwork")
	}
	if spec.HostPID {
		add("hostPID")
	}
	if spec.HostIPC {
		add("hostIPC")
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	containers := slices.Concat(spec.InitContainers, spec.Containers)
	writable := map[string]bool{}
	for _, c := range containers {
		if sc := c.SecurityContext; sc != nil {
			if sc.Privileged != nil && *sc.Privileged {
				add("container %s is privileged", c.Name)
			}
			if sc.Capabilities != nil {
				for _, cp := range sc.Capabilities.Add {
					add("container %s adds capability %s", c.Name, strings.TrimPrefix(string(cp), "CAP_"))
				}
			}
		}
		for _, m := range c.VolumeMounts {
			if p, ok := hostPaths[m.Name]; ok && !m.ReadOnly {
				writable[p] = true
			}
		}
	}
	for _, p := range sortedKeys(writable) {
		add("writable hostPath %s", p)
	}
	return out
}

// privilegeHeadings returns the "### " headings under "## Privileges and why" in path.
func privilegeHeadings(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Privileges and why\n")
	if !ok {
		t.Fatalf("%s has no \"## Privileges and why\" section", path)
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	heads := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^### (.+)$`).FindAllStringSubmatch(section, -1) {
		heads[strings.TrimSpace(m[1])] = true
	}
	return heads
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// findingsOf returns the findings of every object in objs.
func findingsOf(t *testing.T, objs []object) map[string]bool {
	t.Helper()
	findings := map[string]bool{}
	roles := definedRoles(objs)
	for _, o := range objs {
		fs, err := inspect(o, roles)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			findings[f] = true
		}
	}
	return findings
}
