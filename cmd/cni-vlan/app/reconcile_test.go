package app

import (
	"strings"
	"testing"
)

func TestReconcileRefusesMissingEtcd(t *testing.T) {
	t.Setenv("BERTH_ETCD_ENDPOINTS", "")
	cmd := NewCommand()
	cmd.SetArgs([]string{"reconcile", "--kubeconfig", "/nonexistent", "-v", "2"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "etcd.endpoints") {
		t.Fatalf("want an error naming the missing etcd endpoints, got %v", err)
	}
}
