package cni

import (
	"context"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// callAgent sends one IPAM request for this attachment to the node's agent
// and returns its answer, or the CNI error to return (code 11 when the agent
// is away: the runtime retries, and the restarted agent answers).
func callAgent(ctx context.Context, conf *NetConf, args *skel.CmdArgs, verb string,
	valid []agentapi.Attachment) (*agentapi.Response, error) {
	req := &agentapi.Request{Verb: verb, Network: conf.Name, VLAN: conf.VLAN, IPAM: conf.ipam.raw,
		Valid: valid}
	if args != nil {
		req.ContainerID, req.IfName, req.Args = args.ContainerID, args.IfName, args.Args
	}
	return conf.ipam.Do(ctx, req)
}

// checkForeignNetNS refuses a CNI_NETNS that is the plugin's own network
// namespace (the host's, for a runtime-run plugin): configuring it would
// move the host's interface names and routes, and the address would be
// committed for nothing. Checked before any address is allocated.
func checkForeignNetNS(path string) error {
	want, err := os.Stat(path)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS unreadable",
			fmt.Sprintf("CNI_NETNS %q: %v", path, err))
	}
	own, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("failed to read the plugin's own network namespace: %w", err)
	}
	if os.SameFile(want, own) {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			"CNI_NETNS is the plugin's own network namespace",
			fmt.Sprintf("CNI_NETNS %q is the network namespace cni-vlan runs in (the host's); a pod's "+
				"sandbox has its own, e.g. /var/run/netns/cni-1234", path))
	}
	return nil
}

// AttachmentPresent reports whether the attachment's host veth exists on this
// node: without it the pod has no cni-vlan interface, so its address is
// unused here. The node agent frees such addresses (pkg/ipam/agent).
func AttachmentPresent(containerID, ifName string) (bool, error) {
	_, err := netlinksafe.LinkByName(hostVethName(containerID, ifName))
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("host veth of %s/%s: %w", containerID, ifName, err)
	}
	return true, nil
}
