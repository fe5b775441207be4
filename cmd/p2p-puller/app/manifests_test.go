package app_test

import (
	"bufio"
	"errors"
	"io"
	"os"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// readDocs returns the YAML documents of a manifest file by kind.
func readDocs(t *testing.T, path string) map[string][][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][][]byte{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var meta metav1.TypeMeta
		if err := utilyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[meta.Kind] = append(out[meta.Kind], doc)
	}
}

// TestManifestsLeastPrivilege: the p2p manifests give each pod only the
// host paths, capabilities and API rights its job needs: the DaemonSet
// mounts containerd's certs.d (not all of /etc/containerd) and the cache,
// adds no capability, and cannot create Secrets or read any but the peer key.
func TestManifestsLeastPrivilege(t *testing.T) {
	t.Parallel()
	var ds appsv1.DaemonSet
	if err := utilyaml.Unmarshal(readDocs(t, "../../../manifests/p2p/daemonset.yaml")["DaemonSet"][0],
		&ds); err != nil {
		t.Fatal(err)
	}
	var job batchv1.Job
	if err := utilyaml.Unmarshal(readDocs(t, "../../../manifests/p2p/peer-key-job.yaml")["Job"][0],
		&job); err != nil {
		t.Fatal(err)
	}
	allowed := []string{"/etc/containerd/certs.d", "/var/lib/berth/p2p"}
	for _, v := range append(ds.Spec.Template.Spec.Volumes, job.Spec.Template.Spec.Volumes...) {
		if v.HostPath != nil && !slices.Contains(allowed, v.HostPath.Path) {
			t.Errorf("hostPath volume %s mounts %s: want only %v", v.Name, v.HostPath.Path, allowed)
		}
	}
	for _, c := range append(ds.Spec.Template.Spec.Containers, job.Spec.Template.Spec.Containers...) {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("container %s has no securityContext", c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("container %s is privileged", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s allows privilege escalation", c.Name)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")) ||
			len(sc.Capabilities.Add) > 0:
			t.Errorf("container %s capabilities %+v: want ALL dropped and none added", c.Name, sc.Capabilities)
		}
	}

	roles := map[string]rbacv1.Role{}
	for _, doc := range readDocs(t, "../../../manifests/p2p/rbac.yaml")["Role"] {
		var r rbacv1.Role
		if err := utilyaml.Unmarshal(doc, &r); err != nil {
			t.Fatal(err)
		}
		roles[r.Name] = r
	}
	for name, r := range roles {
		for _, rule := range r.Rules {
			if slices.Contains(rule.Verbs, "*") || slices.Contains(rule.Resources, "*") ||
				slices.Contains(rule.APIGroups, "*") {
				t.Errorf("Role %s has a wildcard: %+v", name, rule)
			}
			if slices.Contains(rule.Resources, "secrets") &&
				slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "create" }) &&
				len(rule.ResourceNames) == 0 {
				t.Errorf("Role %s reads Secrets without resourceNames: %+v", name, rule)
			}
		}
	}
	for _, rule := range roles[ds.Spec.Template.Spec.ServiceAccountName].Rules {
		if slices.Contains(rule.Resources, "secrets") &&
			slices.ContainsFunc(rule.Verbs, func(v string) bool { return v != "get" }) {
			t.Errorf("the DaemonSet's Role %s may %v Secrets: want get of the peer key only",
				ds.Spec.Template.Spec.ServiceAccountName, rule.Verbs)
		}
	}
	if _, ok := roles[ds.Spec.Template.Spec.ServiceAccountName]; !ok {
		t.Errorf("no Role for the DaemonSet's ServiceAccount %q", ds.Spec.Template.Spec.ServiceAccountName)
	}
}
