package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Del is the CNI DEL verb. It is idempotent: a missing netns, interface
// or allocation counts as already deleted (the runtime may call DEL many
// times, and after a failed ADD). The per-VLAN bridge stays for the next pod.
func (pl *Plugin) Del(ctx context.Context, args *skel.CmdArgs) error {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	// The pod's interface goes down first: from then on its address answers
	// nothing on the VLAN, so the agent may release it (and hand it to a new
	// pod) while the kernel is still deleting the veth, which waits for an RCU
	// grace period and is most of a DEL's time. The release and the delete run
	// side by side. The agent releases the address only if this attachment
	// still owns it, so a DEL of an old container never frees a newer one's;
	// with etcd away it journals the release and answers at once (DEL never
	// waits for etcd).
	return deletePodLinks(args, func() error {
		_, err := callAgent(ctx, conf, args, agentapi.VerbDel, nil)
		return err
	})
}

// deletePodLinks removes the pod's interface (and with it the veth pair),
// running release once the interface is down or known to be gone, alongside
// the delete. A netns or interface that no longer exists counts as deleted.
func deletePodLinks(args *skel.CmdArgs, release func() error) error {
	released := make(chan error, 1)
	startRelease := func() { go func() { released <- release() }() }
	started := false
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			l, err := netlinksafe.LinkByName(args.IfName)
			if isNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("failed to look up %q: %w", args.IfName, err)
			}
			if err := netlink.LinkSetDown(l); err != nil && !isNotFound(err) {
				return fmt.Errorf("failed to set %q down: %w", args.IfName, err)
			}
			startRelease()
			started = true
			if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
				return fmt.Errorf("failed to delete %q: %w", args.IfName, err)
			}
			return nil
		})
		var notExist ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &notExist) {
			if started {
				<-released // the interface is down: the release stands, the runtime retries the delete
			}
			return fmt.Errorf("failed to delete %s in netns %q: %w", args.IfName, args.Netns, err)
		}
	}
	// The host end is normally gone with its peer; remove it if the netns was already destroyed oddly.
	hostErr := deleteLinkIfExists(hostVethName(args.ContainerID, args.IfName))
	if !started {
		if hostErr != nil {
			return hostErr
		}
		return release()
	}
	return errors.Join(<-released, hostErr)
}
