package app

import (
	"testing"

	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestManifestFlags: the args manifests/ passes `cni-vlan install`, `agent` and `reconcile`
// parse, with the example values of manifests/cni's ConfigMap.
func TestManifestFlags(t *testing.T) {
	vars := map[string]string{
		"UPLINK": "eth1", "VLAN": "100", "DATAPATH": "kernel", "MTU": "0",
		"HOST_GATEWAY": "false", "POOL": "vlan100", "POOL_SUBNET": "10.100.0.0/22",
		"POOL_GATEWAY": "10.100.0.1", "BERTH_ETCD_ENDPOINTS": "https://10.0.0.1:2379",
		"NODE_NAME": "node-a",
	}
	for _, m := range testenv.ManifestCommands(t, "cni-vlan", vars) {
		root := NewCommand()
		cmd, args, err := root.Find(m.Args)
		if err != nil || cmd == root {
			t.Fatalf("%s: no subcommand in %q: %v", m.File, m.Args, err)
		}
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatalf("%s: %s: %v", m.File, cmd.Name(), err)
		}
	}
}

// TestInstallValidatesPool: --pool-subnet and --pool-gateway become the pool created on
// first use; a bad one is refused naming the flag.
func TestInstallValidatesPool(t *testing.T) {
	o := &installOptions{}
	fs := pflag.NewFlagSet("install", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--vlan=100", "--pool=p", "--pool-subnet=10.1.0.0/24",
		"--etcd-endpoints=http://127.0.0.1:2379", "--pool-gateway=10.1.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil || o.ipam.PoolSpec == nil ||
		o.ipam.PoolSpec.Gateway.String() != "10.1.0.1" {
		t.Fatalf("validate: %v, pool %+v", err, o.ipam.PoolSpec)
	}
	o.subnet = "10.1.0.0"
	if err := o.Validate(); err == nil || err.Error()[:13] != "--pool-subnet" {
		t.Fatalf("a subnet without a length: %v, want an error naming --pool-subnet", err)
	}
}
