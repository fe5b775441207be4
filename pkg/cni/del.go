package cni

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"

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
	if err := deletePodLinks(args); err != nil {
		return err
	}
	// The agent releases the address only if this attachment still owns it, so a
	// DEL of an old container never frees a newer one's; with etcd away it
	// journals the release and answers at once (DEL never waits for etcd).
	_, err = callAgent(ctx, conf, args, agentapi.VerbDel, nil)
	return err
}

// deletePodLinks removes the pod's interface (and with it the veth pair).
func deletePodLinks(args *skel.CmdArgs) error {
	if args.Netns != "" {
		err := ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
			if err := ip.DelLinkByName(args.IfName); err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
				return err
			}
			return nil
		})
		var notExist ns.NSPathNotExistErr
		if err != nil && !errors.As(err, &notExist) {
			return fmt.Errorf("failed to delete %s in netns %q: %w", args.IfName, args.Netns, err)
		}
	}
	// The host end is normally gone with its peer; remove it if the netns was already destroyed oddly.
	return deleteLinkIfExists(hostVethName(args.ContainerID, args.IfName))
}
