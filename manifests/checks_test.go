package manifests

import (
	"slices"
	"strings"
	"testing"
)

// TestChecksCatch feeds the checks one object per kind of hole, so a check that stops firing
// cannot pass TestManifestPrivileges silently.
func TestChecksCatch(t *testing.T) {
	tests := []struct {
		name, kind, yaml string
		want             []string
	}{{
		name: "wildcard verb", kind: "ClusterRole",
		yaml: `rules: [{apiGroups: [apps], resources: [deployments], verbs: ["*"]}]`,
		want: []string{"ClusterRole x: wildcard in apiGroups [apps] resources [deployments] " +
			"verbs [*] nonResourceURLs []"},
	}, {
		name: "cluster-wide Secret read", kind: "ClusterRole",
		yaml: `rules: [{apiGroups: [""], resources: [secrets], verbs: [list]}]`,
		want: []string{"ClusterRole x: reads secrets cluster-wide"},
	}, {
		name: "Secret read without names", kind: "Role",
		yaml: `rules: [{apiGroups: [""], resources: [secrets, configmaps], verbs: [get]}]`,
		want: []string{"Role ns/x: reads secrets without resourceNames"},
	}, {
		name: "Secret read of one name", kind: "Role",
		yaml: `rules: [{apiGroups: [""], resources: [secrets], resourceNames: [a], verbs: [get]}]`,
	}, {
		name: "Lease write without names, create allowed", kind: "Role",
		yaml: `rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create, patch]}]`,
		want: []string{"Role ns/x: writes leases without resourceNames"},
	}, {
		name: "Endpoints write without names", kind: "Role",
		yaml: `rules: [{apiGroups: [""], resources: [endpoints], verbs: [update]}]`,
		want: []string{"Role ns/x: writes endpoints without resourceNames"},
	}, {
		name: "create restricted by name never matches", kind: "Role",
		yaml: `rules: [{apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [a], ` +
			`verbs: [create]}]`,
		want: []string{"Role ns/x: resourceNames on create never match (apiGroups " +
			"[coordination.k8s.io] resources [leases] verbs [create] nonResourceURLs [])"},
	}, {
		name: "host namespaces, privileged, capability, writable hostPath", kind: "DaemonSet",
		yaml: `spec: {template: {spec: {hostNetwork: true, hostPID: true,
  initContainers: [{name: i, securityContext: {capabilities: {add: [CAP_NET_ADMIN]}},
    volumeMounts: [{name: ro, mountPath: /a, readOnly: true}]}],
  containers: [{name: c, securityContext: {privileged: true},
    volumeMounts: [{name: rw, mountPath: /b}, {name: ro, mountPath: /c, readOnly: true}]}],
  volumes: [{name: rw, hostPath: {path: /etc}}, {name: ro, hostPath: {path: /var/log}}]}}}`,
		want: []string{"DaemonSet ns/x: hostNetwork", "DaemonSet ns/x: hostPID",
			"DaemonSet ns/x: container i adds capability NET_ADMIN",
			"DaemonSet ns/x: container c is privileged", "DaemonSet ns/x: writable hostPath /etc"},
	}, {
		name: "restricted pod", kind: "Deployment",
		yaml: `spec: {template: {spec: {containers: [{name: c, securityContext: ` +
			`{capabilities: {drop: [ALL]}}}]}}}`,
	}, {
		name: "binding to a role defined elsewhere", kind: "ClusterRoleBinding",
		yaml: `roleRef: {kind: ClusterRole, name: system:kube-scheduler}`,
		want: []string{"ClusterRoleBinding x: binds ClusterRole system:kube-scheduler, " +
			"defined outside manifests/"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := object{kind: tt.kind, name: "x", yaml: []byte(tt.yaml)}
			if !strings.HasPrefix(tt.kind, "Cluster") {
				o.namespace = "ns"
			}
			got, err := inspect(o, map[string]bool{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("findings:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
