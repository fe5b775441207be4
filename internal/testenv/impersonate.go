package testenv

import (
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ServiceAccountUser is the user name and groups the kube-apiserver gives ServiceAccount sa of
// namespace ns: what an RBAC test must act as to see only what the manifests grant sa.
func ServiceAccountUser(ns, sa string) (user string, groups []string) {
	return "system:serviceaccount:" + ns + ":" + sa,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
}

// AsServiceAccount returns a copy of admin that acts as ServiceAccount sa of namespace ns.
func AsServiceAccount(admin *rest.Config, ns, sa string) *rest.Config {
	c := rest.CopyConfig(admin)
	user, groups := ServiceAccountUser(ns, sa)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return c
}

// WriteServiceAccountKubeconfig writes the admin kubeconfig to path, acting as ServiceAccount
// sa of namespace ns, for a component under test that reads a kubeconfig file.
func WriteServiceAccountKubeconfig(t testing.TB, admin []byte, path, ns, sa string) {
	t.Helper()
	c, err := clientcmd.Load(admin)
	if err != nil {
		t.Fatal(err)
	}
	user, groups := ServiceAccountUser(ns, sa)
	for _, a := range c.AuthInfos {
		a.Impersonate, a.ImpersonateGroups = user, groups
	}
	if err := clientcmd.WriteToFile(*c, path); err != nil {
		t.Fatal(err)
	}
}
