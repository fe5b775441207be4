package cni

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/berth-dev/berth/pkg/ipam"
)

// CmdStatus is the CNI STATUS verb: code 50 (plugin not available) when the
// uplink is missing, etcd cannot be reached or the pool has no free address,
// so the runtime stops scheduling pods onto a network that cannot take them.
func CmdStatus(args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	if _, err := netlinksafe.LinkByName(conf.Uplink); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "uplink not available", fmt.Sprintf("uplink %q: %v", conf.Uplink, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.ipam.Timeout())
	defer cancel()
	alloc, closeIPAM, err := conf.ipam.Open(ctx)
	if err != nil {
		return ipam.CNIStatusError(err)
	}
	defer func() { _ = closeIPAM() }() // nothing to do about a failed close
	err = alloc.Status(ctx, conf.ipam.Pool)
	if conf.ipam.InlinePoolMissing(err) {
		err = alloc.Status(ctx, "") // the first ADD creates it: only etcd must answer
	}
	return ipam.CNIStatusError(err)
}

// CmdGC is the CNI GC verb: release this node's addresses of this network
// whose attachment is not in cni.dev/valid-attachments. Interfaces need no
// collection: a pod's veth dies with its network namespace.
func CmdGC(args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.ipam.Timeout())
	defer cancel()
	alloc, closeIPAM, err := conf.ipam.Open(ctx)
	if err != nil {
		return ipam.CNIError(err)
	}
	defer func() { _ = closeIPAM() }() // nothing to do about a failed close
	_, err = alloc.GC(ctx, ipam.GCRequest{
		Network: conf.Name,
		Node:    conf.ipam.Node(),
		Pool:    conf.ipam.Pool,
		Valid:   ipam.HandlesFromAttachments(conf.ValidAttachments),
	})
	if conf.ipam.InlinePoolMissing(err) {
		return nil // never created, so nothing allocated from it
	}
	return ipam.CNIError(err)
}

// Funcs returns the plugin's verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: CmdAdd, Del: CmdDel, Check: CmdCheck, Status: CmdStatus, GC: CmdGC}
}
