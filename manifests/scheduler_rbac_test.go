package manifests

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/component-helpers/auth/rbac/validation"
	"k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac/bootstrappolicy"
	"sigs.k8s.io/yaml"
)

// TestSchedulerCannotTakeOtherLeases checks that berth-scheduler holds every permission the
// built-in system:kube-scheduler role gives kube-scheduler (of the vendored Kubernetes, default
// feature gates), except leader election, and that no cluster-wide role lets it write a Lease:
// with one, it could hold kube-system/kube-scheduler and stop the default scheduler.
func TestSchedulerCannotTakeOtherLeases(t *testing.T) {
	const sa = "berth-scheduler"
	builtin := map[string][]rbacv1.PolicyRule{}
	for _, r := range bootstrappolicy.ClusterRoles() {
		builtin[r.Name] = r.Rules
	}
	manifest := map[string][]rbacv1.PolicyRule{}
	var bound []string // ClusterRoles bound cluster-wide to the scheduler
	for _, o := range render(t, ".") {
		switch o.kind {
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := yaml.Unmarshal(o.yaml, &r); err != nil {
				t.Fatal(err)
			}
			manifest[r.Name] = r.Rules
		case "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := yaml.Unmarshal(o.yaml, &b); err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
				return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == "berth-system"
			}) {
				bound = append(bound, b.RoleRef.Name)
			}
		}
	}
	var held []rbacv1.PolicyRule
	for _, name := range bound {
		rules, ok := manifest[name]
		if !ok {
			rules = builtin[name]
		}
		for _, r := range rules {
			if grants(r, "coordination.k8s.io", "leases", append([]string{"create"}, writeVerbs...)) &&
				!slices.Equal(r.Verbs, []string{"create"}) {
				t.Errorf("ClusterRole %s lets %s write Leases %v in every namespace; only its own "+
					"lease berth-system/berth-scheduler belongs to it", name, sa, r.ResourceNames)
			}
		}
		held = append(held, rules...)
	}
	var needed []rbacv1.PolicyRule
	for _, r := range builtin["system:kube-scheduler"] {
		if slices.Contains(r.APIGroups, "coordination.k8s.io") {
			continue // leader election: the Role berth-scheduler-leader-election
		}
		needed = append(needed, r)
	}
	if len(needed) < 10 {
		t.Fatalf("system:kube-scheduler has only %d rules: wrong bootstrappolicy?", len(needed))
	}
	if ok, missing := validation.Covers(held, needed); !ok {
		for _, r := range missing {
			t.Errorf("%s lacks what kube-scheduler needs: %s", sa, ruleString(r))
		}
	}
}
