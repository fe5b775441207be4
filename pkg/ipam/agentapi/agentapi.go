// Package agentapi is the protocol between the cni-vlan plugin binary and
// the node's IPAM agent (`cni-vlan agent`, pkg/ipam/agent): one JSON request
// and one JSON response per connection on a unix socket, by default
// /run/berth/ipam.sock. It imports neither etcd nor gRPC nor protobuf, so the
// binary the container runtime starts for every pod stays as small and as
// quick to start as the reference plugins; the agent holds the etcd session.
package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// DefaultSocket is where the agent listens unless the network config's
// "ipam.agentSocket" says otherwise. /run/berth is a hostPath of the
// cni-vlan DaemonSet, so the plugin (run by the runtime on the host) sees it.
const DefaultSocket = "/run/berth/ipam.sock"

// MaxMessage bounds a request or response (a GC's valid-attachment list is
// the largest: 64 KiB holds ~600 attachments, a node runs at most ~250 pods).
const MaxMessage = 1 << 20

// Verbs of the protocol; they mirror the CNI verbs.
const (
	VerbAdd    = "ADD"
	VerbDel    = "DEL"
	VerbCheck  = "CHECK"
	VerbStatus = "STATUS"
	VerbGC     = "GC"
)

// Request is what the plugin sends: the CNI call's identity and the network
// config's "ipam" object, which the agent validates.
type Request struct {
	Verb        string `json:"verb"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// Args is CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID).
	Args string `json:"args,omitempty"`
	// Network is the CNI network name, recorded with the allocation.
	Network string `json:"network"`
	// VLAN is the network's VLAN; ADD refuses a pool of another VLAN.
	VLAN int `json:"vlan,omitempty"`
	// IPAM is the network config's "ipam" object.
	IPAM json.RawMessage `json:"ipam"`
	// Valid lists the attachments a GC keeps (cni.dev/valid-attachments).
	Valid []Attachment `json:"valid,omitempty"`
	// Plugin is the sending plugin: empty for cni-vlan, PluginBerthIPAM for
	// the stand-alone IPAM, whose main plugin (macvlan, ipvlan, bridge) makes
	// no cni-vlan host veth, so the agent must not judge its attachments by one.
	Plugin string `json:"plugin,omitempty"`
}

// PluginBerthIPAM is Request.Plugin for berth-ipam.
const PluginBerthIPAM = "berth-ipam"

// Attachment names one CNI attachment.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// Response is the agent's answer: Error (a CNI error with its code) or, for
// ADD and CHECK, the allocation.
type Response struct {
	Error      *types.Error `json:"error,omitempty"`
	Allocation *Allocation  `json:"allocation,omitempty"`
	// Existed is set by ADD when the attachment already had this address
	// (a repeated ADD): a failed repeat must not release it.
	Existed bool `json:"existed,omitempty"`
}

// Allocation is an address handed to an attachment.
type Allocation struct {
	Pool    string       `json:"pool"`
	VLAN    int          `json:"vlan"`
	IP      netip.Prefix `json:"ip"`
	Gateway netip.Addr   `json:"gateway"`
	Routes  []Route      `json:"routes,omitempty"`
}

// Route is a route given with the address; a zero GW means via Gateway.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// Result returns the allocation as a CNI result (IPs and routes, no interfaces).
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
		gw := r.GW
		if !gw.IsValid() {
			gw = a.Gateway
		}
		res.Routes = append(res.Routes, &types.Route{
			Dst: net.IPNet{IP: net.IP(r.Dst.Addr().AsSlice()),
				Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
			GW: net.IP(gw.AsSlice()),
		})
	}
	return res
}

// ErrAgentUnavailable means the agent could not be reached or went away
// mid-call (it restarts, or the DaemonSet pod is not running on this node).
var ErrAgentUnavailable = errors.New("cni-vlan node agent not answering")

// Call sends req to the agent on socket and returns its answer. A failure to
// reach the agent, or a connection closed before the answer, wraps
// ErrAgentUnavailable: the call may be retried (CNI code 11).
func Call(ctx context.Context, socket string, req *Request) (*Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w on %s (is the cni-vlan DaemonSet pod running on this node?): %w",
			ErrAgentUnavailable, socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return nil, fmt.Errorf("%w: set deadline on %s: %w", ErrAgentUnavailable, socket, err)
		}
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return nil, fmt.Errorf("%w: send %s to %s: %w", ErrAgentUnavailable, req.Verb, socket, err)
	}
	var resp Response
	if err := json.NewDecoder(io.LimitReader(conn, MaxMessage)).Decode(&resp); err != nil {
		return nil, fmt.Errorf("%w: no answer to %s from %s: %w", ErrAgentUnavailable, req.Verb, socket, err)
	}
	return &resp, nil
}

// CNIError turns a failed Call into the CNI error the plugin returns: code
// 11 (try again later) when the agent is away, the agent's own error
// otherwise. nil when the call succeeded.
func CNIError(resp *Response, err error) error {
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater, "cni-vlan node agent timed out", err.Error())
	case err != nil:
		return types.NewError(types.ErrTryAgainLater, "cni-vlan node agent not available", err.Error())
	case resp.Error != nil:
		return resp.Error
	}
	return nil
}

// ReadRequest reads one request from the connection, bounded by MaxMessage.
func ReadRequest(r io.Reader) (*Request, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxMessage))
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("failed to read a request (at most %d bytes of JSON): %w", MaxMessage, err)
	}
	return &req, nil
}

// Timeout is how long the plugin waits for the agent by default; the
// network config's "ipam.timeoutSeconds" overrides it.
const Timeout = 20 * time.Second

// Client is what a plugin (cni-vlan, berth-ipam) reads itself of the network
// config's "ipam" object to reach the agent; the agent reads the rest.
type Client struct {
	// AgentSocket is the node agent's unix socket (default DefaultSocket).
	AgentSocket string `json:"agentSocket,omitempty"`
	// TimeoutSeconds bounds one CNI call's IPAM work (default Timeout).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// Validate checks the two fields; the errors name the key and give an example.
func (c Client) Validate() error {
	switch {
	case c.TimeoutSeconds < 0 || c.TimeoutSeconds > 600:
		return fmt.Errorf("ipam \"timeoutSeconds\" must be 0 (20 s) to 600, got %d", c.TimeoutSeconds)
	case c.AgentSocket != "" && !strings.HasPrefix(c.AgentSocket, "/"):
		return fmt.Errorf("ipam \"agentSocket\" %q must be an absolute path, e.g. %q", c.AgentSocket,
			DefaultSocket)
	}
	return nil
}

// Socket is the agent's socket path.
func (c Client) Socket() string {
	if c.AgentSocket != "" {
		return c.AgentSocket
	}
	return DefaultSocket
}

// Do sends req to the agent within the config's timeout and returns its
// answer, or the CNI error the plugin returns (CNIError; and code 999 for an
// ADD or CHECK answered without an address).
func (c Client) Do(ctx context.Context, req *Request) (*Response, error) {
	timeout := Timeout
	if c.TimeoutSeconds > 0 {
		timeout = time.Duration(c.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := Call(ctx, c.Socket(), req)
	if err := CNIError(resp, err); err != nil {
		return nil, err
	}
	if (req.Verb == VerbAdd || req.Verb == VerbCheck) && resp.Allocation == nil {
		return nil, types.NewError(types.ErrInternal, "the node agent answered without an address",
			fmt.Sprintf("%s of %s/%s on %s", req.Verb, req.ContainerID, req.IfName, c.Socket()))
	}
	return resp, nil
}
