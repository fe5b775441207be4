package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/pkg/ipam"
)

// Name is the plugin's CNI "type" and binary name.
const Name = "cni-vlan"

// NetConf is cni-vlan's network configuration (one entry of a conflist):
//
//	{"cniVersion": "1.1.0", "name": "tenant-a", "type": "cni-vlan",
//	 "uplink": "eth1", "vlan": 100, "datapath": "tc-bpf", "mtu": 1500,
//	 "ipam": {"etcd": {"endpoints": ["https://10.0.0.1:2379"]}, "pool": "vlan100"}}
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
	// Datapath is "kernel" (802.1Q sub-interface, the default) or "tc-bpf".
	Datapath string `json:"datapath,omitempty"`
	// HostGateway puts the pool's gateway address on the bridge, making this
	// node the VLAN's router (single-node clusters and labs; in production the
	// VLAN's router on the switch side is the gateway).
	HostGateway bool `json:"hostGateway,omitempty"`

	ipam *ipam.Config
}

var ifNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// LoadConf parses and validates a network config and its prevResult.
func LoadConf(data []byte) (*NetConf, error) {
	conf := &NetConf{Datapath: DatapathKernel}
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
	if conf.IPAM.Type != "" && conf.IPAM.Type != ipam.PluginType {
		return nil, fmt.Errorf("\"ipam.type\" is %q: cni-vlan has its own etcd IPAM built in; leave \"type\" out or set it to %q", conf.IPAM.Type, ipam.PluginType)
	}
	ic, err := ipam.LoadConfig(data)
	if err != nil {
		return nil, err
	}
	if ic.PoolSpec != nil && ic.PoolSpec.VLAN != conf.VLAN {
		return nil, fmt.Errorf("\"vlan\" is %d but the IPAM pool %q is for VLAN %d: a pool serves one VLAN", conf.VLAN, ic.PoolSpec.Name, ic.PoolSpec.VLAN)
	}
	conf.ipam = ic
	return conf, nil
}

func (c *NetConf) validate() error {
	var errs []error
	if c.Uplink == "" {
		errs = append(errs, errors.New("\"uplink\" is required: the host interface on the switch's trunk port, e.g. \"eth1\""))
	} else if !ifNameRE.MatchString(c.Uplink) {
		errs = append(errs, fmt.Errorf("\"uplink\" %q is not a valid interface name", c.Uplink))
	}
	if c.VLAN < 1 || c.VLAN > 4094 {
		errs = append(errs, fmt.Errorf("\"vlan\" must be an 802.1Q id from 1 to 4094, got %d", c.VLAN))
	}
	if c.Bridge != "" && !ifNameRE.MatchString(c.Bridge) {
		errs = append(errs, fmt.Errorf("\"bridge\" %q is not a valid interface name (at most 15 of a-z A-Z 0-9 _ . -)", c.Bridge))
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("\"mtu\" must be 0 (the uplink's) or 576-65535, got %d", c.MTU))
	}
	if _, err := NewDatapath(c.Datapath); err != nil {
		errs = append(errs, fmt.Errorf("\"datapath\": %w", err))
	}
	return errors.Join(errs...)
}

// spec returns the per-VLAN plumbing of the network.
func (c *NetConf) spec() Spec {
	return Spec{Uplink: c.Uplink, VLAN: c.VLAN, Bridge: c.Bridge, MTU: c.MTU}
}

// IPAMConfig returns the IPAM part of the config.
func (c *NetConf) IPAMConfig() *ipam.Config { return c.ipam }
