package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// PluginType is the CNI "type" of the stand-alone IPAM plugin (cmd/berth-ipam).
const PluginType = "berth-ipam"

// Config is the IPAM section of a CNI network config: the "ipam" object of
// any plugin using berth-ipam, and embedded as-is by cni-vlan.
//
//	"ipam": {
//	  "type": "berth-ipam",
//	  "etcd": {"endpoints": ["https://10.0.0.1:2379"], "certFile": "/etc/berth/etcd/tls.crt",
//	           "keyFile": "/etc/berth/etcd/tls.key", "trustedCAFile": "/etc/berth/etcd/ca.crt"},
//	  "pool": "vlan100",
//	  "poolSpec": {"name": "vlan100", "vlan": 100, "subnet": "10.100.0.0/22", "gateway": "10.100.0.1",
//	               "reserved": [{"start": "10.100.0.2", "end": "10.100.0.9"}]},
//	  "fixedIPStatefulSets": ["db/postgres", "cache/*"]
//	}
type Config struct {
	Type string `json:"type,omitempty"`
	// Etcd says how to reach the IPAM's etcd.
	Etcd EtcdConfig `json:"etcd"`
	// Prefix is the etcd key prefix (default /berth/ipam).
	Prefix string `json:"prefix,omitempty"`
	// Pool names the pool to allocate from. Optional when PoolSpec is set.
	Pool string `json:"pool,omitempty"`
	// PoolSpec, if set, is created in etcd on first use (or checked to match the stored pool).
	PoolSpec *Pool `json:"poolSpec,omitempty"`
	// NodeName is this node's name, recorded with each allocation and used by GC (default: hostname).
	NodeName string `json:"nodeName,omitempty"`
	// FixedIPStatefulSets lists "namespace/statefulset" (or "namespace/*") whose pods keep their IP
	// across restarts and nodes.
	FixedIPStatefulSets []string `json:"fixedIPStatefulSets,omitempty"`
	// MaxAttempts bounds allocation transactions before "try again later" (default 32).
	MaxAttempts int `json:"maxAttempts,omitempty"`
	// TimeoutSeconds bounds one CNI call's IPAM work (default 20).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
	// NodeBuffer is how many addresses of the pool each node's agent keeps
	// claimed, to hand out while etcd is unreachable (default 4, at most 64).
	NodeBuffer int `json:"nodeBuffer,omitempty"`
	// AgentSocket is the node agent's unix socket (cni-vlan; default /run/berth/ipam.sock).
	AgentSocket string `json:"agentSocket,omitempty"`
}

// DefaultNodeBuffer is the node buffer size of a pool whose config says none.
const DefaultNodeBuffer = 4

// Buffer returns NodeBuffer or its default.
func (c *Config) Buffer() int {
	if c.NodeBuffer > 0 {
		return c.NodeBuffer
	}
	return DefaultNodeBuffer
}

// EtcdConfig says how to reach etcd. TLS is used when the endpoints are https.
type EtcdConfig struct {
	Endpoints     []string `json:"endpoints"`
	CertFile      string   `json:"certFile,omitempty"`
	KeyFile       string   `json:"keyFile,omitempty"`
	TrustedCAFile string   `json:"trustedCAFile,omitempty"`
	// DialTimeoutSeconds bounds connecting to etcd (default 5).
	DialTimeoutSeconds int `json:"dialTimeoutSeconds,omitempty"`
}

var fixedRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?/(\*|[a-z0-9]([-.a-z0-9]*[a-z0-9])?)$`)

// LoadConfig parses and validates the "ipam" object of a CNI network config
// (or the whole network config, whose "ipam" key is then used).
func LoadConfig(data []byte) (*Config, error) {
	var wrapper struct {
		IPAM *Config `json:"ipam"`
	}
	if err := json.Unmarshal(data, &wrapper); err != nil {
		return nil, fmt.Errorf("failed to parse the IPAM config: %w", err)
	}
	c := wrapper.IPAM
	if c == nil {
		c = &Config{}
		if err := json.Unmarshal(data, c); err != nil {
			return nil, fmt.Errorf("failed to parse the IPAM config: %w", err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the config, fills Pool from PoolSpec, and says what to fix.
func (c *Config) Validate() error {
	if err := c.Etcd.Validate(); err != nil {
		return err
	}
	return c.ValidateAllocation()
}

// LoadAgentConfig parses and validates the "ipam" object a plugin sends to
// the node agent: as LoadConfig, but "etcd" may be left out (the agent has
// its own connection).
func LoadAgentConfig(data []byte) (*Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("failed to parse the IPAM config: %w", err)
	}
	if len(c.Etcd.Endpoints) > 0 {
		if err := c.Etcd.Validate(); err != nil {
			return nil, err
		}
	}
	if err := c.ValidateAllocation(); err != nil {
		return nil, err
	}
	return c, nil
}

// ValidateAllocation checks everything but the etcd connection.
func (c *Config) ValidateAllocation() error {
	if c.AgentSocket != "" && !strings.HasPrefix(c.AgentSocket, "/") {
		return fmt.Errorf("ipam \"agentSocket\" %q must be an absolute path, e.g. "+
			"\"/run/berth/ipam.sock\"", c.AgentSocket)
	}
	if c.NodeBuffer < 0 || c.NodeBuffer > 64 {
		return fmt.Errorf("ipam \"nodeBuffer\" must be 0 (the default, %d) to 64, got %d",
			DefaultNodeBuffer, c.NodeBuffer)
	}
	if c.PoolSpec != nil {
		if err := c.PoolSpec.Validate(); err != nil {
			return fmt.Errorf("ipam \"poolSpec\": %w", err)
		}
		if c.Pool != "" && c.Pool != c.PoolSpec.Name {
			return fmt.Errorf("ipam \"pool\" is %q but \"poolSpec.name\" is %q: they must match (or leave "+
				"\"pool\" out)", c.Pool, c.PoolSpec.Name)
		}
		c.Pool = c.PoolSpec.Name
	}
	if c.Pool == "" {
		return errors.New("ipam \"pool\" is required: the name of an IPAM pool (e.g. \"vlan100\"), or " +
			"an inline \"poolSpec\"")
	}
	for _, f := range c.FixedIPStatefulSets {
		if !fixedRE.MatchString(f) {
			return fmt.Errorf("ipam \"fixedIPStatefulSets\" entry %q is invalid: use "+
				"\"namespace/statefulset\" or \"namespace/*\"", f)
		}
	}
	if c.MaxAttempts < 0 || c.TimeoutSeconds < 0 {
		return errors.New("ipam \"maxAttempts\" and \"timeoutSeconds\" must not be negative")
	}
	return nil
}

// Validate checks the endpoints and TLS files.
func (e EtcdConfig) Validate() error {
	if len(e.Endpoints) == 0 {
		return errors.New("ipam \"etcd.endpoints\" is required: the etcd client URLs, e.g. " +
			"[\"https://10.0.0.1:2379\"]")
	}
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("ipam \"etcd.endpoints\" entry %q is not an http(s)://host:port URL", ep)
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		return errors.New("ipam \"etcd.certFile\" and \"etcd.keyFile\" go together: set both or neither")
	}
	return nil
}

// checkFiles reports an unreadable TLS file as ErrUnavailable (try again
// later): the files come from a Secret that may be rotated or not yet
// installed, and a DEL must not fail with a config error because of them.
func (e EtcdConfig) checkFiles() error {
	for _, f := range []string{e.CertFile, e.KeyFile, e.TrustedCAFile} {
		if f == "" {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			return fmt.Errorf("%w: etcd TLS file unreadable: %w", ErrUnavailable, err)
		}
		_ = fh.Close() // opened only to prove it is readable
	}
	return nil
}

// NewClient connects to etcd (the client connects lazily; errors show on first use).
func (e EtcdConfig) NewClient() (*clientv3.Client, error) {
	if err := e.checkFiles(); err != nil {
		return nil, err
	}
	cfg := clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(), // a CNI plugin's stderr is for its own errors
	}
	if e.DialTimeoutSeconds > 0 {
		cfg.DialTimeout = time.Duration(e.DialTimeoutSeconds) * time.Second
	}
	tlsWanted := e.CertFile != "" || e.TrustedCAFile != ""
	for _, ep := range e.Endpoints {
		tlsWanted = tlsWanted || strings.HasPrefix(ep, "https://")
	}
	if tlsWanted {
		info := transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile, TrustedCAFile: e.TrustedCAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("%w: etcd TLS config: %w", ErrUnavailable, err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("ipam: connect to etcd %v: %w", e.Endpoints, err)
	}
	return cli, nil
}

// SetEtcdTLSFile points the config at an etcd TLS file installed on the
// node: name is the Secret's key, "tls.crt", "tls.key" or "ca.crt".
func (c *Config) SetEtcdTLSFile(name, path string) error {
	switch name {
	case "tls.crt":
		c.Etcd.CertFile = path
	case "tls.key":
		c.Etcd.KeyFile = path
	case "ca.crt":
		c.Etcd.TrustedCAFile = path
	default:
		return fmt.Errorf("etcd TLS file %q: want tls.crt, tls.key or ca.crt", name)
	}
	return nil
}

// Timeout is the deadline for one CNI call's IPAM work.
func (c *Config) Timeout() time.Duration {
	if c.TimeoutSeconds > 0 {
		return time.Duration(c.TimeoutSeconds) * time.Second
	}
	return 20 * time.Second
}

// Open connects to etcd and returns the allocator and a func that closes the
// connection. It writes nothing: only ADD creates an inline pool (EnsurePool),
// so DEL, CHECK, STATUS and GC keep working when the poolSpec has drifted.
func (c *Config) Open(context.Context) (*EtcdAllocator, func() error, error) {
	cli, err := c.Etcd.NewClient()
	if err != nil {
		return nil, nil, err
	}
	var opts []Option
	if c.MaxAttempts > 0 {
		opts = append(opts, WithMaxAttempts(c.MaxAttempts))
	}
	a, err := NewEtcd(cli, c.Prefix, opts...)
	if err != nil {
		_ = cli.Close() // the error above is what matters
		return nil, nil, err
	}
	return a, cli.Close, nil
}

// EnsurePool creates the inline PoolSpec if it does not exist yet, or checks
// that the stored pool matches it (ADD only). Without a PoolSpec it does nothing.
func (c *Config) EnsurePool(ctx context.Context, a Allocator) error {
	if c.PoolSpec == nil {
		return nil
	}
	return a.EnsurePool(ctx, *c.PoolSpec)
}

// InlinePoolMissing reports whether err only says that the inline PoolSpec
// has not been created yet (the first ADD creates it): STATUS and GC then
// have nothing to report or collect.
func (c *Config) InlinePoolMissing(err error) bool {
	return c.PoolSpec != nil && errors.Is(err, ErrPoolNotFound)
}

// CheckNode refuses a NodeName that is not the host the plugin runs on
// ($NODE_NAME, else the hostname). One config file is normally copied to
// every node; with another node's name in it, GC here would release that
// node's live addresses, and CHECK there would then fail.
func (c *Config) CheckNode() error {
	if c.NodeName == "" {
		return nil
	}
	here := os.Getenv("NODE_NAME")
	if here == "" {
		here, _ = os.Hostname() // empty: nothing to compare with
	}
	if here != "" && !strings.EqualFold(c.NodeName, here) {
		return fmt.Errorf("ipam \"nodeName\" is %q but this host is %q: leave \"nodeName\" out (the "+
			"hostname is used), "+
			"or GC on this host would release %q's live addresses", c.NodeName, here, c.NodeName)
	}
	return nil
}

// Node returns NodeName, else the hostname.
func (c *Config) Node() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	if n := os.Getenv("NODE_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname() // an empty node name only disables GC, which then says so
	return h
}

// WithFixed returns h with Fixed set when its pod belongs to one of FixedIPStatefulSets.
func (c *Config) WithFixed(h Handle) Handle {
	for _, f := range c.FixedIPStatefulSets {
		ns, sts, _ := strings.Cut(f, "/")
		if ns != h.PodNamespace || h.PodName == "" {
			continue
		}
		if sts == "*" || statefulSetPod(sts, h.PodName) {
			h.Fixed = true
		}
	}
	return h
}

// statefulSetPod reports whether pod is "<sts>-<ordinal>".
func statefulSetPod(sts, pod string) bool {
	ord, ok := strings.CutPrefix(pod, sts+"-")
	if !ok || ord == "" {
		return false
	}
	for _, r := range ord {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
