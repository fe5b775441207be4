package cni

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Name is the plugin's CNI "type" and binary name.
const Name = "cni-vlan"

// NetConf is cni-vlan's network configuration (one entry of a conflist):
//
//	{"cniVersion": "1.1.0", "name": "tenant-a", "type": "cni-vlan",
//	 "uplink": "eth1", "vlan": 100, "datapath": "tc-bpf", "mtu": 1500,
//	 "ipam": {"pool": "vlan100"}}
//
// The "ipam" object goes as-is to the node's IPAM agent, which validates it
// (ipam.Config) and holds the etcd session: this package, and so the plugin
// binary, links no etcd, gRPC or protobuf code.
type NetConf struct {
	types.PluginConf
	// Uplink is the host interface on the switch's trunk port (required).
	Uplink string `json:"uplink"`
	// VLAN is the network's 802.1Q id, 1-4094 (required).
	VLAN int `json:"vlan"`
	// Bridge is the per-VLAN bridge (default "berth<vlan>").
	Bridge string `json:"bridge,omitempty"`
	// MTU of the pod interfaces and the bridge (default: the uplink's MTU).
	MTU int `json:"mtu,omitempty"`
	// Datapath is "auto" (the default: kernel if the node's kernel has 802.1Q, else tc-bpf),
	// "kernel" (802.1Q sub-interface) or "tc-bpf".
	Datapath string `json:"datapath,omitempty"`
	// HostGateway puts the pool's gateway address on the bridge, making this
	// node the VLAN's router (single-node clusters and labs; in production the
	// VLAN's router on the switch side is the gateway).
	HostGateway bool `json:"hostGateway,omitempty"`

	ipam ipamRef
	// ipamObj is the IPAM config Install writes (SetIPAM); ipam.raw is what was read.
	ipamObj any
}

// ipamType is the IPAM "type" cni-vlan accepts besides none: its own.
const ipamType = "berth-ipam"

// ipamRef is what the plugin itself reads of the "ipam" object; the agent reads the rest.
type ipamRef struct {
	raw      json.RawMessage
	Type     string `json:"type,omitempty"`
	Pool     string `json:"pool,omitempty"`
	PoolSpec *struct {
		Name string `json:"name"`
		VLAN int    `json:"vlan"`
		// Subnet and Gateway: a host-gateway node joins the VLAN at install with them.
		Subnet  string `json:"subnet,omitempty"`
		Gateway string `json:"gateway,omitempty"`
	} `json:"poolSpec,omitempty"`
	// Client is how the plugin reaches the node agent (agentSocket, timeoutSeconds).
	agentapi.Client
}

// validIfName reports whether s is 1-15 of a-z A-Z 0-9 _ . - (a regular
// expression would be compiled at every start of a per-pod process).
func validIfName(s string) bool {
	if len(s) < 1 || len(s) > 15 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// LoadConf parses and validates a network config and its prevResult.
func LoadConf(data []byte) (*NetConf, error) {
	conf := &NetConf{Datapath: DatapathAuto}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, fmt.Errorf("failed to parse the network config: %w", err)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("failed to parse prevResult: %w", err)
	}
	if err := conf.validate(); err != nil {
		return nil, err
	}
	if conf.Bridge == "" {
		conf.Bridge = fmt.Sprintf("berth%d", conf.VLAN)
	}
	if conf.IPAM.Type != "" && conf.IPAM.Type != ipamType {
		return nil, fmt.Errorf("\"ipam.type\" is %q: cni-vlan has its own etcd IPAM built in; leave "+
			"\"type\" out or set it to %q", conf.IPAM.Type, ipamType)
	}
	if err := conf.loadIPAM(data); err != nil {
		return nil, err
	}
	return conf, nil
}

// loadIPAM reads the fields of the "ipam" object the plugin needs and keeps
// the object for the agent.
func (c *NetConf) loadIPAM(data []byte) error {
	var w struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("failed to parse the network config: %w", err)
	}
	if len(w.IPAM) == 0 || string(w.IPAM) == "null" {
		return errors.New("\"ipam\" is required, e.g. {\"pool\": \"vlan100\"}")
	}
	if err := json.Unmarshal(w.IPAM, &c.ipam); err != nil {
		return fmt.Errorf("failed to parse \"ipam\": %w", err)
	}
	c.ipam.raw = w.IPAM
	r := c.ipam
	switch {
	case r.Pool == "" && (r.PoolSpec == nil || r.PoolSpec.Name == ""):
		return errors.New("ipam \"pool\" is required: the name of an IPAM pool (e.g. \"vlan100\"), or " +
			"an inline \"poolSpec\"")
	case r.PoolSpec != nil && r.PoolSpec.VLAN != c.VLAN:
		return fmt.Errorf("\"vlan\" is %d but the IPAM pool %q is for VLAN %d: a pool serves one VLAN",
			c.VLAN, r.PoolSpec.Name, r.PoolSpec.VLAN)
	}
	return r.Client.Validate()
}

func (c *NetConf) validate() error {
	var errs []error
	if c.Uplink == "" {
		errs = append(errs, errors.New("\"uplink\" is required: the host interface on the switch's "+
			"trunk port, e.g. \"eth1\""))
	} else if !validIfName(c.Uplink) {
		errs = append(errs, fmt.Errorf("\"uplink\" %q is not a valid interface name", c.Uplink))
	}
	if c.VLAN < 1 || c.VLAN > 4094 {
		errs = append(errs, fmt.Errorf("\"vlan\" must be an 802.1Q id from 1 to 4094, got %d", c.VLAN))
	}
	if c.Bridge != "" && !validIfName(c.Bridge) {
		errs = append(errs, fmt.Errorf("\"bridge\" %q is not a valid interface name (at most 15 of a-z "+
			"A-Z 0-9 _ . -)", c.Bridge))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("\"mtu\" must be 0 (the uplink's) or 576-65535, got %d", c.MTU))
	}
	switch c.Datapath {
	case "", DatapathAuto, DatapathKernel, DatapathTCBPF:
	default:
		errs = append(errs, fmt.Errorf("\"datapath\": %w", errUnknownDatapath(c.Datapath)))
	}
	return errors.Join(errs...)
}

// spec returns the per-VLAN plumbing of the network.
func (c *NetConf) spec() Spec {
	return Spec{Uplink: c.Uplink, VLAN: c.VLAN, Bridge: c.Bridge, MTU: c.MTU}
}

// IPAMConfig returns the "ipam" object of the config, as read.
func (c *NetConf) IPAMConfig() json.RawMessage { return c.ipam.raw }
