package app

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/kubeclient"
	"github.com/berth-dev/berth/pkg/ipam"
)

func newReleaseCommand(o *ipamOptions) *cobra.Command {
	var owner ipam.Handle
	var kubeconfig string
	var force bool
	cmd := &cobra.Command{
		Use:   "release POOL IP --container-id ID [--ifname IF] [--kubeconfig F] [--force]",
		Short: "Release a stuck address, only if it still belongs to the given container and its pod is gone",
		Long: `Release a stuck address. The address is released only if it still belongs to
the container named with --container-id (see "cni-vlan ipam list"): an address
that meanwhile went to another pod is never taken away. It also refuses while
the owning pod (the same UID) still exists, asking the cluster from
--kubeconfig, else $KUBECONFIG, else the in-cluster config, else ~/.kube/config.
When no cluster can be asked, it refuses too; --force skips the pod check.`,
		Example: `  cni-vlan ipam release vlan100 10.100.0.17 --container-id 3f2a9c...
  cni-vlan ipam release vlan100 10.100.0.17 --container-id 3f2a9c... --force   # no cluster to ask`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[1])
			if err != nil {
				return fmt.Errorf("IP %q: %w", args[1], err)
			}
			if owner.ContainerID == "" {
				return fmt.Errorf("--container-id is required: copy it from `cni-vlan ipam list %s` "+
					"(\"-\" releases an address held for a fixed-IP pod)", args[0])
			}
			if owner.ContainerID == "-" {
				owner.ContainerID = ""
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				if !force {
					if err := checkPodGone(ctx, a, kubeconfig, args[0], ip, owner, out); err != nil {
						return err
					}
				}
				rel, err := a.ReleaseIP(ctx, args[0], ip, owner)
				if err != nil {
					return notFoundHint(err)
				}
				fmt.Fprintf(out, "released %s from pool %s (container %s, pod %s/%s)\n", ip, rel.Pool,
					dash(rel.Handle.ContainerID), dash(rel.Handle.PodNamespace), dash(rel.Handle.PodName))
				return nil
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&owner.ContainerID, "container-id", "",
		"the container that owns the address (required)")
	cmd.Flags().StringVar(&owner.IfName, "ifname", "",
		"the interface that owns the address (optional extra check)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "",
		"cluster to ask whether the owning pod is gone (default $KUBECONFIG, else in-cluster, else "+
			"~/.kube/config)")
	cmd.Flags().BoolVar(&force, "force", false, "release without checking that the owning pod is gone")
	return cmd
}

// checkPodGone refuses unless the pod recorded with the address is gone (not
// found, or recreated under the same name with another UID). An address
// that is not owner's is left to ReleaseIP, which names its real owner.
func checkPodGone(ctx context.Context, a *ipam.EtcdAllocator, kubeconfig, pool string,
	ip netip.Addr, owner ipam.Handle, out io.Writer) error {
	all, err := a.ListAllocations(ctx, pool)
	if err != nil {
		return err
	}
	for _, al := range all {
		h := al.Handle
		if al.IP.Addr() != ip || h.ContainerID != owner.ContainerID ||
			(owner.IfName != "" && owner.IfName != h.IfName) {
			continue
		}
		if h.PodName == "" || h.PodNamespace == "" {
			fmt.Fprintf(out, "%s records no pod (not made by a Kubernetes runtime): nothing to check\n", ip)
			return nil
		}
		pod := fmt.Sprintf("%s/%s (uid %s)", h.PodNamespace, h.PodName, dash(h.PodUID))
		cs, err := kubeclient.NewClientset(kubeconfig)
		if err != nil {
			return fmt.Errorf("refusing to release %s: cannot check whether its pod %s is gone: %w (pass "+
				"--kubeconfig, set $KUBECONFIG, or use --force if you know it is gone)", ip, pod, err)
		}
		p, err := cs.CoreV1().Pods(h.PodNamespace).Get(ctx, h.PodName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			fmt.Fprintf(out, "pod %s no longer exists\n", pod)
			return nil
		case err != nil:
			return fmt.Errorf("refusing to release %s: cannot check whether its pod %s is gone: %w (use "+
				"--force if you know it is gone)", ip, pod, err)
		case h.PodUID != "" && string(p.UID) != h.PodUID:
			fmt.Fprintf(out, "pod %s no longer exists (%s/%s now is uid %s)\n", pod, h.PodNamespace,
				h.PodName, p.UID)
			return nil
		case h.PodUID == "":
			return fmt.Errorf("refusing to release %s: a pod %s/%s exists and the address records no pod "+
				"UID to tell it from its owner: delete the pod, or use --force", ip, h.PodNamespace, h.PodName)
		}
		return fmt.Errorf("refusing to release %s: its pod %s still exists: delete the pod (its DEL "+
			"releases the address), or use --force", ip, pod)
	}
	return nil
}

func newPinsCommand(o *ipamOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "pins [POOL]",
		Short: "List fixed IPs pinned to StatefulSet pods",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool := ""
			if len(args) == 1 {
				pool = args[0]
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				pins, err := a.ListPins(ctx, pool)
				if err != nil {
					return err
				}
				return o.print(out, pins, func(w io.Writer) {
					fmt.Fprintln(w, "POOL\tPOD\tIP")
					for _, p := range pins {
						fmt.Fprintf(w, "%s\t%s/%s\t%s\n", p.Pool, p.Namespace, p.Name, p.IP)
					}
				})
			})(cmd, args)
		},
	}
}

func newUnpinCommand(o *ipamOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "unpin POOL NAMESPACE/POD",
		Short: "Remove a fixed-IP pin (the address is freed now if held, else at the pod's release)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, name, ok := strings.Cut(args[1], "/")
			if !ok || ns == "" || name == "" {
				return fmt.Errorf("%q: want NAMESPACE/POD, e.g. db/postgres-0", args[1])
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				if err := a.Unpin(ctx, args[0], ns, name); err != nil {
					return err
				}
				fmt.Fprintf(out, "unpinned %s/%s in pool %s\n", ns, name, args[0])
				return nil
			})(cmd, args)
		},
	}
}
