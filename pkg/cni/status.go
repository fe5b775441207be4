package cni

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Status is the CNI STATUS verb: code 50 (plugin not available) when the
// uplink is missing, etcd cannot be reached or the pool has no free address,
// so the runtime stops scheduling pods onto a network that cannot take them.
func (pl *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	if _, err := netlinksafe.LinkByName(conf.Uplink); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "uplink not available",
			fmt.Sprintf("uplink %q: %v", conf.Uplink, err))
	}
	// The agent says whether the node can take a pod: etcd answers and the pool
	// has room, or etcd is away and the node's buffer still has an address.
	if _, err := callAgent(ctx, conf, nil, agentapi.VerbStatus, nil); err != nil {
		var te *types.Error
		if errors.As(err, &te) && te.Code != types.ErrPluginNotAvailable &&
			te.Code != types.ErrInvalidNetworkConfig {
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		return err
	}
	return nil
}

// GC is the CNI GC verb: release this node's addresses of this network
// whose attachment is not in cni.dev/valid-attachments, and delete the host
// ends of pod veths on this network's bridge that belong to no valid
// attachment (a ghost veth, e.g. of a leaked netns, could still answer ARP
// for its address after the IPAM gave it to another pod). As the spec asks,
// it goes on after a failure and returns every error at the end.
func (pl *Plugin) GC(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	valid := conf.ValidAttachments
	var errs []error
	if err := pl.gcVeths(conf.Bridge, valid); err != nil { // local: done even when etcd is down
		errs = append(errs, err)
	}
	atts := make([]agentapi.Attachment, 0, len(valid))
	for _, a := range valid {
		atts = append(atts, agentapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	if _, err := callAgent(ctx, conf, nil, agentapi.VerbGC, atts); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return errs[0] // keep the agent's CNI code
	}
	if len(errs) > 0 {
		return types.NewError(types.ErrInternal, "GC failed", errors.Join(errs...).Error())
	}
	return nil
}

// gcVeths deletes the pod veths (host ends, named by hostVethName) on bridge
// that belong to no valid attachment. A bridge serves one network.
func (pl *Plugin) gcVeths(bridge string, valid []types.GCAttachment) error {
	unlock, err := pl.nodeLock()
	if err != nil {
		return err
	}
	defer unlock()
	br, err := netlinksafe.LinkByName(bridge)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("GC: bridge %q: %w", bridge, err)
	}
	keep := make(map[string]bool, len(valid))
	for _, h := range valid {
		keep[hostVethName(h.ContainerID, h.IfName)] = true
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("GC: list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index || l.Type() != "veth" || !strings.HasPrefix(a.Name, "bv") ||
			keep[a.Name] {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("GC: delete ghost veth %s on %s: %w", a.Name, bridge, err))
		}
	}
	return errors.Join(errs...)
}

// Plugin is the CNI plugin: its verbs with the node-local settings they share.
type Plugin struct {
	// LockDir holds the node lock files (default DefaultLockDir).
	LockDir string

	// postIPAMError, set by a test, makes ADD fail after every step (address allocated,
	// interfaces created and configured) so the rollback can be observed.
	postIPAMError error
}

// Funcs returns the verbs, with the default settings, for skel.PluginMainFuncs; they run
// under ctx.
func Funcs(ctx context.Context) skel.CNIFuncs { return (&Plugin{}).Funcs(ctx) }

// Funcs returns pl's verbs for skel.PluginMainFuncs; they run under ctx.
func (pl *Plugin) Funcs(ctx context.Context) skel.CNIFuncs {
	verb := func(v func(context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(args *skel.CmdArgs) error { return v(ctx, args) }
	}
	return skel.CNIFuncs{Add: verb(pl.Add), Del: verb(pl.Del), Check: verb(pl.Check),
		Status: verb(pl.Status), GC: verb(pl.GC)}
}

func (pl *Plugin) nodeLock() (unlock func(), err error) {
	if pl.LockDir == "" {
		return nodeLock(DefaultLockDir)
	}
	return nodeLock(pl.LockDir)
}
