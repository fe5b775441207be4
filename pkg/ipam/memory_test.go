package ipam_test

import (
	"testing"

	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/ipamtest"
)

// The fake passes the same suite as the etcd allocator (etcd_integration_test.go).
func TestMemoryConformance(t *testing.T) {
	ipamtest.Conformance(t, func(*testing.T) ipam.Allocator { return ipam.NewMemory() })
}
