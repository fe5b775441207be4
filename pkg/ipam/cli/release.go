package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berth-dev/berth/pkg/ipam"
)

func newReleaseCommand(o *options) *cobra.Command {
	var owner ipam.Handle
	var kubeconfig string
	var force bool
	cmd := &cobra.Command{
		Use:   "release POOL IP --container-id ID [--ifname IF]",
		Short: "Release a stuck address, only if it still belongs to the given container",
		Long: `Release a stuck address. The address is released only if it still belongs to
the container named with --container-id (see "cni-vlan ipam list"): an address
that meanwhile went to another pod is never taken away. With --kubeconfig the
command also refuses while the owning pod (same UID) still exists, unless --force.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[1])
			if err != nil {
				return fmt.Errorf("IP %q: %w", args[1], err)
			}
			if owner.ContainerID == "" {
				return fmt.Errorf("--container-id is required: copy it from `cni-vlan ipam list %s` (\"-\" releases an address held for a fixed-IP pod)", args[0])
			}
			if owner.ContainerID == "-" {
				owner.ContainerID = ""
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				if kubeconfig != "" && !force {
					if err := checkPodGone(ctx, a, kubeconfig, args[0], ip); err != nil {
						return err
					}
				}
				rel, err := a.ReleaseIP(ctx, args[0], ip, owner)
				if err != nil {
					return notFoundHint(err)
				}
				fmt.Fprintf(out, "released %s from pool %s (container %s, pod %s/%s)\n", ip, rel.Pool, dash(rel.Handle.ContainerID), dash(rel.Handle.PodNamespace), dash(rel.Handle.PodName))
				return nil
			})(cmd, args)
		},
	}
	cmd.Flags().StringVar(&owner.ContainerID, "container-id", "", "the container that owns the address (required)")
	cmd.Flags().StringVar(&owner.IfName, "ifname", "", "the interface that owns the address (optional extra check)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "check with this cluster that the owning pod is gone")
	cmd.Flags().BoolVar(&force, "force", false, "skip the pod check")
	return cmd
}

// checkPodGone refuses when the pod recorded with the address still exists with the same UID.
func checkPodGone(ctx context.Context, a *ipam.EtcdAllocator, kubeconfig, pool string, ip netip.Addr) error {
	all, err := a.ListAllocations(ctx, pool)
	if err != nil {
		return err
	}
	for _, al := range all {
		h := al.Handle
		if al.IP.Addr() != ip || h.PodName == "" {
			continue
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		pod, err := cs.CoreV1().Pods(h.PodNamespace).Get(ctx, h.PodName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("check pod %s/%s: %w", h.PodNamespace, h.PodName, err)
		case h.PodUID == "" || string(pod.UID) == h.PodUID:
			return fmt.Errorf("pod %s/%s (uid %s) still exists and owns %s: delete the pod, or use --force", h.PodNamespace, h.PodName, pod.UID, ip)
		}
	}
	return nil
}

func newPinsCommand(o *options) *cobra.Command {
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

func newUnpinCommand(o *options) *cobra.Command {
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
