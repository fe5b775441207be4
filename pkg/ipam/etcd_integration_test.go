//go:build integration

// Integration tests of the etcd IPAM. They start Debian's etcd (apt: etcd-server) on free loopback ports.
package ipam_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

func TestEtcdConformance(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := testenv.NewEtcdClient(t, e)
	ipamtest.Conformance(t, func(t *testing.T) ipam.Allocator {
		a, err := ipam.NewEtcd(cli, "/test/"+t.Name())
		if err != nil {
			t.Fatal(err)
		}
		return a
	})
}
