package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berth-dev/berth/internal/jsonutil"
)

// InstallOptions says what `cni-vlan install` puts on a node. It runs in the
// DaemonSet's init container with the host's CNI directories mounted.
type InstallOptions struct {
	// BinDir is the host's CNI plugin directory (e.g. /opt/cni/bin).
	BinDir string
	// ConfDir is the host's CNI config directory (e.g. /etc/cni/net.d).
	ConfDir string
	// ConfName is the conflist file name; "10-berth.conflist" sorts before most others.
	ConfName string
	// Network is the network config written into the conflist.
	Network NetConf
	// Bandwidth chains the reference bandwidth plugin (kubernetes.io/ingress-bandwidth,
	// egress-bandwidth) after cni-vlan.
	Bandwidth bool
	// Portmap chains the reference portmap plugin (hostPort).
	Portmap bool
	// RequireChained makes Install fail when a chained plugin's binary is
	// missing from BinDir; by default the plugin is dropped from the conflist
	// (and Report says so) rather than written into a conflist whose every
	// ADD would fail.
	RequireChained bool
	// RuntimeCNIVersion is the newest CNI spec version the node's container runtime
	// accepts in a result: 1.0.0 for containerd 1.6/1.7 (libcni 1.1, which refuses a
	// 1.1.0 result and fails every ADD), 1.1.0 for containerd >= 2.0 and CRI-O >= 1.30.
	// The conflist's cniVersion never goes above it. Empty means 1.0.0.
	RuntimeCNIVersion string
	// TLSSourceDir holds tls.crt, tls.key and ca.crt for etcd (a mounted Secret);
	// they are copied to <ConfDir>/berth-etcd because the plugin runs on the host.
	TLSSourceDir string
	// BerthIPAM also installs the slim berth-ipam build (BerthIPAMBinaryName, next to
	// the running binary) as BinDir/berth-ipam, for networks of other main plugins
	// (macvlan, ipvlan, bridge) that allocate from the global pools through this
	// node's agent ("agentSocket").
	BerthIPAM bool
}

// InstallReport says what Install wrote and why, for the install log.
type InstallReport struct {
	// CNIVersion is the conflist's cniVersion; CNIVersionReason says why.
	CNIVersion, CNIVersionReason string
	// Chained are the chained plugins in the conflist.
	Chained []string
	// Dropped are chained plugins asked for but left out: their binary is not in BinDir.
	Dropped []DroppedPlugin
	// JoinedVLAN says the node was connected to the VLAN (bridge, trunk, gateway address)
	// at install, because it is the gateway of its own pods (hostGateway).
	JoinedVLAN bool
	// Datapath is the datapath written into the conflist ("auto" resolved on this node).
	Datapath string
	// BerthIPAM is where the stand-alone IPAM plugin was installed, if it was.
	BerthIPAM string
}

// DroppedPlugin is a chained plugin Install left out of the conflist, and why.
type DroppedPlugin struct{ Name, Reason string }

// Install copies the running binary into BinDir and writes the conflist.
// Both are replaced atomically (write to a temp file, then rename), so a
// container runtime never executes or reads a half-written file.
func Install(o InstallOptions) (InstallReport, error) {
	var rep InstallReport
	switch o.RuntimeCNIVersion {
	case "", "1.0.0", "1.1.0":
	default:
		return rep, fmt.Errorf("runtime CNI version %q: want 1.0.0 (containerd 1.6/1.7) or 1.1.0 "+
			"(containerd >= 2.0, CRI-O >= 1.30)", o.RuntimeCNIVersion)
	}
	src, err := pluginSource()
	if err != nil {
		return rep, err
	}
	// The conflist names the datapath the probe found, so every ADD and CHECK of the node uses
	// the one install set up, even if the kernel's modules change later.
	if o.Network.Datapath, err = ResolveDatapath(o.Network.Datapath); err != nil {
		return rep, err
	}
	rep.Datapath = o.Network.Datapath
	if err := copyFileAtomic(src, filepath.Join(o.BinDir, Name), 0o755); err != nil {
		return rep, err
	}
	if o.BerthIPAM {
		ipamSrc := filepath.Join(filepath.Dir(src), BerthIPAMBinaryName)
		if st, err := os.Stat(ipamSrc); err != nil || !st.Mode().IsRegular() {
			return rep, fmt.Errorf("the berth-ipam plugin to install is not next to %s: %s is "+
				"missing (the berth image has it; build it with make build)", src, ipamSrc)
		}
		rep.BerthIPAM = filepath.Join(o.BinDir, "berth-ipam")
		if err := copyFileAtomic(ipamSrc, rep.BerthIPAM, 0o755); err != nil {
			return rep, err
		}
	}
	if o.TLSSourceDir != "" {
		if err := o.installTLS(); err != nil {
			return rep, err
		}
	}
	if err := o.checkChained(&rep); err != nil {
		return rep, err
	}
	list, err := o.conflist(&rep)
	if err != nil {
		return rep, err
	}
	conf, err := LoadConf(jsonutil.MustMarshal(list["plugins"].([]any)[0]))
	if err != nil {
		return rep, fmt.Errorf("the network config to install is invalid: %w", err)
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return rep, fmt.Errorf("failed to encode the conflist: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(o.ConfDir, o.ConfName), append(data, '\n'),
		0o600); err != nil {
		return rep, err
	}
	if conf.HostGateway {
		if rep.JoinedVLAN, err = joinVLAN(conf); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// joinVLAN connects the node to the network's VLAN before any pod does, when the node is its
// own pods' gateway (hostGateway): the node's own processes (the API server calling a webhook,
// kube-proxy forwarding to an endpoint on another node) reach the VLAN only through the bridge,
// which would otherwise appear with the node's first pod. It needs the pool's gateway from the
// config (--pool-subnet/--pool-gateway); without it the node joins at its first pod.
func joinVLAN(conf *NetConf) (bool, error) {
	ps := conf.ipam.PoolSpec
	if ps == nil || ps.Subnet == "" {
		return false, nil
	}
	subnet, err := netip.ParsePrefix(ps.Subnet)
	if err != nil {
		return false, fmt.Errorf("pool subnet %q: %w", ps.Subnet, err)
	}
	gw := subnet.Masked().Addr().Next()
	if ps.Gateway != "" {
		if gw, err = netip.ParseAddr(ps.Gateway); err != nil {
			return false, fmt.Errorf("pool gateway %q: %w", ps.Gateway, err)
		}
	}
	dp, err := NewDatapath(conf.Datapath)
	if err != nil {
		return false, err
	}
	unlock, err := nodeLock(DefaultLockDir)
	if err != nil {
		return false, err
	}
	defer unlock()
	spec := conf.spec()
	spec.HostGateway = net.IP(gw.AsSlice())
	if _, _, err := dp.Ensure(spec); err != nil {
		return false, fmt.Errorf("failed to join the node to VLAN %d on %s: %w", conf.VLAN, conf.Uplink, err)
	}
	ipc := &current.IPConfig{Gateway: spec.HostGateway,
		Address: net.IPNet{IP: spec.HostGateway, Mask: net.CIDRMask(subnet.Bits(), gw.BitLen())}}
	return true, ensureGatewayAddr(conf.Bridge, conf.Uplink, []*current.IPConfig{ipc})
}

// checkChained drops (or, with RequireChained, refuses) every chained plugin
// whose binary is not an executable file in BinDir: the runtime would fail
// every ADD of the chain on it.
func (o *InstallOptions) checkChained(rep *InstallReport) error {
	for _, c := range []struct {
		name string
		on   *bool
	}{{"portmap", &o.Portmap}, {"bandwidth", &o.Bandwidth}} {
		if !*c.on {
			continue
		}
		path := filepath.Join(o.BinDir, c.name)
		st, err := os.Stat(path)
		if err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			rep.Chained = append(rep.Chained, c.name)
			continue
		}
		why := fmt.Sprintf("%s is missing or not executable", path)
		if err != nil {
			why = err.Error()
		}
		if o.RequireChained {
			return fmt.Errorf("chained plugin %q: %s: install the reference CNI plugins there (Debian: "+
				"containernetworking-plugins, or the upstream release tarball), or turn it off (--%s=false)",
				c.name, why, c.name)
		}
		*c.on = false
		rep.Dropped = append(rep.Dropped, DroppedPlugin{c.name, why})
	}
	return nil
}

// PluginBinaryName is the slim plugin build (go build -tags cniplugin
// ./cmd/cni-vlan: no IPAM CLI, no reconciler, no client-go), which starts
// ~3x faster than the full binary; the runtime starts one per CNI call.
// Install copies it when it sits next to the running binary.
const PluginBinaryName = "cni-vlan-plugin"

// BerthIPAMBinaryName is the slim build of the stand-alone IPAM plugin (go
// build -tags cniplugin ./cmd/berth-ipam: the node agent's client only), which
// InstallOptions.BerthIPAM installs as berth-ipam.
const BerthIPAMBinaryName = "berth-ipam-plugin"

// pluginSource returns the binary to install on the node: the slim plugin
// build next to the running binary if there is one, else the running binary.
func pluginSource() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("failed to find the running binary: %w", err)
	}
	slim := filepath.Join(filepath.Dir(self), PluginBinaryName)
	if st, err := os.Stat(slim); err == nil && st.Mode().IsRegular() {
		return slim, nil
	}
	return self, nil
}

// conflist builds the conflist: cni-vlan, then the chained plugins.
func (o InstallOptions) conflist(rep *InstallReport) (map[string]any, error) {
	n := o.Network
	if n.CNIVersion == "" {
		n.CNIVersion, rep.CNIVersionReason = o.chainVersion()
	} else {
		rep.CNIVersionReason = "set in the network config"
	}
	rep.CNIVersion = n.CNIVersion
	n.Type = Name
	plugin := map[string]any{}
	if err := json.Unmarshal(jsonutil.MustMarshal(n), &plugin); err != nil {
		return nil, err
	}
	for _, k := range []string{"cniVersion", "name", "prevResult"} {
		delete(plugin, k)
	}
	plugins := []any{plugin}
	if o.Portmap {
		plugins = append(plugins, map[string]any{"type": "portmap",
			"capabilities": map[string]bool{"portMappings": true}})
	}
	if o.Bandwidth {
		plugins = append(plugins, map[string]any{"type": "bandwidth",
			"capabilities": map[string]bool{"bandwidth": true}})
	}
	return map[string]any{"cniVersion": n.CNIVersion, "name": n.Name, "plugins": plugins}, nil
}

// installTLS copies the etcd client certificate files next to the conflist
// and points the IPAM config at them.
func (o *InstallOptions) installTLS() error {
	dst := filepath.Join(o.ConfDir, "berth-etcd")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dst, err)
	}
	ic, ok := o.Network.ipamObj.(etcdTLSSetter)
	if !ok {
		return errors.New("install: no IPAM config to add the etcd TLS files to")
	}
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		src := filepath.Join(o.TLSSourceDir, name)
		if st, err := os.Stat(src); errors.Is(err, os.ErrNotExist) || (err == nil && st.Size() == 0) {
			continue // plain-http etcd, or a Secret without this key
		}
		if err := copyFileAtomic(src, filepath.Join(dst, name), 0o600); err != nil {
			return err
		}
		if err := ic.SetEtcdTLSFile(name, filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

// etcdTLSSetter is the IPAM config (ipam.Config) as Install sees it: the
// plugin package does not import pkg/ipam, which links the etcd client.
type etcdTLSSetter interface {
	SetEtcdTLSFile(name, path string) error
}

// SetIPAM sets the IPAM config (an *ipam.Config) the installed network uses.
func (n *NetConf) SetIPAM(c any) { n.ipamObj = c }

// MarshalJSON writes the config including its IPAM section.
func (n NetConf) MarshalJSON() ([]byte, error) {
	type plain NetConf
	m := map[string]any{}
	b, err := json.Marshal(plain(n))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "ipam")
	switch {
	case n.ipamObj != nil:
		m["ipam"] = n.ipamObj
	case n.ipam.raw != nil:
		m["ipam"] = n.ipam.raw
	}
	if n.Capabilities == nil {
		delete(m, "capabilities")
	}
	delete(m, "dns")
	return json.Marshal(m)
}

func copyFileAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", src, err)
	}
	defer in.Close()
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", src, err)
	}
	return writeFileAtomic(dst, data, mode)
}

func writeFileAtomic(dst string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err != nil {
		return fmt.Errorf("failed to create a temp file next to %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("failed to install %s: %w", dst, err)
	}
	return nil
}

// chainVersion picks the conflist's cniVersion: 1.1.0 (STATUS, GC) when the
// runtime accepts it and every chained reference plugin in BinDir supports it,
// else 1.0.0 (e.g. Debian bookworm's containernetworking-plugins 1.1.1 stop at
// 1.0.0), and says why: at 1.0.0 the runtime never calls STATUS or GC, so leaks
// wait for the reconciler.
func (o InstallOptions) chainVersion() (version, reason string) {
	if o.RuntimeCNIVersion == "" || o.RuntimeCNIVersion == "1.0.0" {
		return "1.0.0", "the container runtime accepts CNI results up to 1.0.0 (--runtime-cni-version; " +
			"set 1.1.0 on containerd >= 2.0 or CRI-O >= 1.30 to have STATUS and GC called)"
	}
	var chained []string
	if o.Bandwidth {
		chained = append(chained, "bandwidth")
	}
	if o.Portmap {
		chained = append(chained, "portmap")
	}
	for _, p := range chained {
		path := filepath.Join(o.BinDir, p)
		cmd := exec.Command(path)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = strings.NewReader("{}")
		out, err := cmd.Output()
		var info struct {
			SupportedVersions []string `json:"supportedVersions"`
		}
		switch {
		case err != nil:
			return "1.0.0", fmt.Sprintf("%s VERSION failed (%v): assuming it lacks CNI 1.1.0; STATUS and "+
				"GC will not be called", path, err)
		case json.Unmarshal(out, &info) != nil:
			return "1.0.0", fmt.Sprintf("%s VERSION printed %q: assuming it lacks CNI 1.1.0; STATUS and GC "+
				"will not be called", path, out)
		case !slices.Contains(info.SupportedVersions, "1.1.0"):
			return "1.0.0", fmt.Sprintf("%s supports %v, not 1.1.0: STATUS and GC will not be called; "+
				"upgrade the reference plugins to >= 1.5 for them", path, info.SupportedVersions)
		}
	}
	if len(chained) == 0 {
		return "1.1.0", "no chained plugins"
	}
	return "1.1.0", fmt.Sprintf("every chained plugin (%s) supports 1.1.0", strings.Join(chained, ", "))
}
