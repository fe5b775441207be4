package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// k8sArgs are the CNI_ARGS the container runtime passes for Kubernetes pods.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // names fixed by the runtime
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
}

// HandleFromCNI builds the handle of a CNI call: containerID and ifName from
// the CNI_CONTAINERID / CNI_IFNAME, pod identity from CNI_ARGS (K8S_POD_*).
func HandleFromCNI(containerID, ifName, cniArgs, network, node string) (Handle, error) {
	var a k8sArgs
	if err := types.LoadArgs(cniArgs, &a); err != nil {
		return Handle{}, fmt.Errorf("failed to parse CNI_ARGS %q: %w", cniArgs, err)
	}
	h := Handle{
		ContainerID: containerID, IfName: ifName,
		PodNamespace: string(a.K8S_POD_NAMESPACE), PodName: string(a.K8S_POD_NAME),
		PodUID: string(a.K8S_POD_UID),
		Node:   node, Network: network,
	}
	return h, validateHandle(h)
}

// HandlesFromAttachments converts a GC request's cni.dev/valid-attachments.
func HandlesFromAttachments(atts []types.GCAttachment) []Handle {
	out := make([]Handle, 0, len(atts))
	for _, a := range atts {
		out = append(out, Handle{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return out
}

// Result returns the allocation as a CNI result (IPs, gateway, routes; no interfaces).
func (a Allocation) Result() *types100.Result {
	addr := a.IP.Addr()
	res := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		IPs: []*types100.IPConfig{{
			Address: net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(a.IP.Bits(), addr.BitLen())},
			Gateway: net.IP(a.Gateway.AsSlice()),
		}},
	}
	for _, r := range a.Routes {
		rt := &types.Route{Dst: net.IPNet{IP: net.IP(r.Dst.Addr().AsSlice()),
			Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}}
		gw := r.GW
		if !gw.IsValid() {
			gw = a.Gateway
		}
		rt.GW = net.IP(gw.AsSlice())
		res.Routes = append(res.Routes, rt)
	}
	return res
}

// CNI error codes this package uses besides the spec's well-known ones.
const (
	// CodeExhausted is returned by ADD when the pool has no free address.
	CodeExhausted uint = 100
	// CodeOwnerMismatch is returned when an address belongs to another container.
	CodeOwnerMismatch uint = 101
)

// CNIError maps an IPAM error to a CNI error with the right code: ErrTryAgain
// and ErrUnavailable -> 11 (try again later), invalid pool/handle/config -> 7,
// ErrExhausted -> 100. Use CNIStatusError for the STATUS verb.
func CNIError(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, ErrTryAgain), errors.Is(err, ErrUnavailable),
		errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater, "ipam: try again later", err.Error())
	case errors.Is(err, ErrInvalidPool), errors.Is(err, ErrInvalidHandle),
		errors.Is(err, ErrPoolNotFound), errors.Is(err, ErrPoolOverlap):
		return types.NewError(types.ErrInvalidNetworkConfig, "ipam: invalid configuration", err.Error())
	case errors.Is(err, ErrExhausted):
		return types.NewError(CodeExhausted, "ipam: pool exhausted", err.Error())
	case errors.Is(err, ErrOwnerMismatch):
		return types.NewError(CodeOwnerMismatch, "ipam: address owned by another container", err.Error())
	}
	return types.NewError(types.ErrInternal, "ipam", err.Error())
}

// CNIStatusError maps a Status error to the STATUS verb's code 50 (plugin not available).
func CNIStatusError(err error) error {
	if err == nil {
		return nil
	}
	return types.NewError(types.ErrPluginNotAvailable, "ipam not available", err.Error())
}
