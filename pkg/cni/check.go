package cni

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Check is the CNI CHECK verb: the pod's interface exists with the
// addresses of prevResult, the IPAM still has the reservation under this
// attachment, and the VLAN plumbing and bridge port are in place.
func (pl *Plugin) Check(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs a prevResult",
			"the runtime passed no prevResult to check against")
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("failed to convert prevResult: %w", err)
	}
	contIf, err := ourInterface(res, args)
	if err != nil {
		return err
	}
	if err := checkIPAM(ctx, conf, args, res); err != nil {
		return err
	}
	dp, err := NewDatapath(conf.Datapath)
	if err != nil {
		return err
	}
	if err := dp.Check(conf.spec()); err != nil {
		return fmt.Errorf("%s datapath of VLAN %d: %w", dp.Name(), conf.VLAN, err)
	}
	if err := checkHostVeth(conf, args); err != nil {
		return err
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		if err := checkInterfaceIPs(args.IfName, res.IPs); err != nil {
			return err
		}
		if err := checkRoutes(res.Routes); err != nil {
			return err
		}
		l, err := netlinksafe.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("pod interface %q: %w", args.IfName, err)
		}
		if contIf.Mac != "" && l.Attrs().HardwareAddr.String() != contIf.Mac {
			return fmt.Errorf("pod interface %q has MAC %s, prevResult says %s", args.IfName,
				l.Attrs().HardwareAddr, contIf.Mac)
		}
		return nil
	})
}

// ourInterface finds the pod interface of this attachment in a result.
func ourInterface(res *current.Result, args *skel.CmdArgs) (*current.Interface, error) {
	for _, i := range res.Interfaces {
		if i.Name == args.IfName && i.Sandbox == args.Netns {
			return i, nil
		}
	}
	return nil, fmt.Errorf("prevResult has no interface %q in sandbox %q", args.IfName, args.Netns)
}

// checkIPAM verifies the IPAM holds this attachment's address as in the result.
func checkIPAM(ctx context.Context, conf *NetConf, args *skel.CmdArgs, res *current.Result) error {
	resp, err := callAgent(ctx, conf, args, agentapi.VerbCheck, nil)
	if err != nil {
		return err
	}
	a := resp.Allocation
	for _, ipc := range res.IPs {
		if ipc.Address.IP.Equal(a.IP.Addr().AsSlice()) {
			return nil
		}
	}
	return fmt.Errorf("IPAM reserved %s for %s/%s, but the pod was given %v", a.IP, args.ContainerID,
		args.IfName, res.IPs)
}

// checkHostVeth verifies the pod's host-side veth is a port of the VLAN's bridge.
func checkHostVeth(conf *NetConf, args *skel.CmdArgs) error {
	name := hostVethName(args.ContainerID, args.IfName)
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return fmt.Errorf("host veth %q: %w", name, err)
	}
	br, err := netlinksafe.LinkByName(conf.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", conf.Bridge, err)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %q is not a port of bridge %q", name, conf.Bridge)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("%q is a %s, not a veth", name, l.Type())
	}
	return nil
}
