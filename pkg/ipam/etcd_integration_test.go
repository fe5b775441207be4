//go:build integration

// Integration tests of the etcd IPAM. They start Debian's etcd (apt: etcd-server) on free loopback ports.
package ipam_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

func newEtcdAllocator(t *testing.T, opts ...ipam.Option) *ipam.EtcdAllocator {
	t.Helper()
	e := testenv.StartEtcd(t)
	a, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "/test/"+t.Name(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestEtcdSmoke(t *testing.T) {
	a := newEtcdAllocator(t)
	ctx := context.Background()
	p := ipam.Pool{Name: "p1", VLAN: 100, Subnet: netip.MustParsePrefix("10.1.0.0/29")}
	if err := a.CreatePool(ctx, p); err != nil {
		t.Fatal(err)
	}
	h := ipam.Handle{ContainerID: "c1", IfName: "eth0"}
	al, err := a.Allocate(ctx, "p1", h)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", al)
	if err := a.Release(ctx, h); err != nil {
		t.Fatal(err)
	}
}
