package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/berth-dev/berth/pkg/ipam"
)

func installOptions(t *testing.T, bin string) InstallOptions {
	conf, tls := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(tls, "ca.crt"), []byte("-----BEGIN CERTIFICATE-----\n"),
		0o600); err != nil {
		t.Fatal(err)
	}
	// An empty key of the Secret.
	if err := os.WriteFile(filepath.Join(tls, "tls.crt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o := InstallOptions{BinDir: bin, ConfDir: conf, ConfName: "10-berth.conflist", Bandwidth: true,
		TLSSourceDir: tls,
		Network:      NetConf{Uplink: "eth1", VLAN: 100, Datapath: DatapathTCBPF}}
	o.Network.Name = "berth"
	o.Network.SetIPAM(&ipam.Config{Etcd: ipam.EtcdConfig{Endpoints: []string{"https://10.0.0.1:2379"}},
		Pool: "vlan100"})
	return o
}

// TestInstallWithoutBandwidthBinary: a conflist chaining a plugin whose
// binary is missing fails every ADD, so the plugin is left out (and reported),
// or Install fails with RequireChained.
func TestInstallWithoutBandwidthBinary(t *testing.T) {
	bin := t.TempDir()
	o := installOptions(t, bin)
	rep, err := Install(o)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	if st, err := os.Stat(filepath.Join(bin, Name)); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary not installed executable: %v %v", st, err)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(o.ConfDir, "10-berth.conflist"))
	if err != nil {
		t.Fatalf("installed conflist does not load: %v", err)
	}
	if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != Name {
		t.Fatalf("plugins: %+v, want cni-vlan alone", list.Plugins)
	}
	if len(rep.Dropped) != 1 || rep.Dropped[0].Name != "bandwidth" ||
		!strings.Contains(rep.Dropped[0].Reason, filepath.Join(bin, "bandwidth")) {
		t.Errorf("report does not name the missing bandwidth binary: %+v", rep.Dropped)
	}
	if list.CNIVersion != "1.0.0" || rep.CNIVersion != "1.0.0" ||
		!strings.Contains(rep.CNIVersionReason, "runtime") {
		t.Errorf("cniVersion %q (report %q, %q), want 1.0.0 for a runtime not known to accept 1.1.0",
			list.CNIVersion, rep.CNIVersion, rep.CNIVersionReason)
	}
	nc, err := LoadConf(list.Plugins[0].Bytes)
	if err != nil {
		t.Fatalf("installed cni-vlan config is invalid: %v\n%s", err, list.Plugins[0].Bytes)
	}
	if nc.Uplink != "eth1" || nc.VLAN != 100 || nc.Datapath != DatapathTCBPF || nc.Bridge != "berth100" {
		t.Errorf("installed config: %+v", nc)
	}
	ic, err := ipam.LoadConfig(nc.IPAMConfig())
	if err != nil {
		t.Fatalf("installed IPAM config is invalid: %v", err)
	}
	if ic.Etcd.TrustedCAFile != filepath.Join(o.ConfDir, "berth-etcd", "ca.crt") ||
		ic.Etcd.CertFile != "" {
		raw, _ := json.Marshal(ic)
		t.Errorf("etcd TLS files not installed as expected: %s", raw)
	}

	// A runtime that accepts 1.1.0 results (containerd >= 2.0) gets 1.1.0 with nothing chained.
	o.RuntimeCNIVersion = "1.1.0"
	if rep, err = Install(o); err != nil || rep.CNIVersion != "1.1.0" {
		t.Errorf("Install with runtime 1.1.0 and nothing chained: cniVersion %q (%q), %v; want 1.1.0",
			rep.CNIVersion, rep.CNIVersionReason, err)
	}
	o.RuntimeCNIVersion = "0.4"
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), `"0.4"`) {
		t.Errorf("Install with runtime CNI version 0.4: got %v, want an error naming it", err)
	}

	o = installOptions(t, t.TempDir())
	o.RequireChained = true
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(),
		filepath.Join(o.BinDir, "bandwidth")) || !strings.Contains(err.Error(), "--bandwidth=false") {
		t.Fatalf("Install with RequireChained and no bandwidth binary: got %v, want an error naming the "+
			"file and the fix", err)
	}
	if _, err := os.Stat(filepath.Join(o.ConfDir, "10-berth.conflist")); err == nil {
		t.Error("a conflist was written although Install failed")
	}
}

// TestInstallChainsRealBandwidth uses the reference bandwidth plugin
// (apt: containernetworking-plugins): it is chained, and its supported
// versions decide the cniVersion, with the reason reported.
func TestInstallChainsRealBandwidth(t *testing.T) {
	const ref = "/usr/lib/cni/bandwidth"
	if _, err := os.Stat(ref); err != nil {
		t.Skipf("reference bandwidth plugin not installed: %v", err)
	}
	bin := t.TempDir()
	if err := copyFileAtomic(ref, filepath.Join(bin, "bandwidth"), 0o755); err != nil {
		t.Fatal(err)
	}
	o := installOptions(t, bin)
	o.RuntimeCNIVersion = "1.1.0" // so that the plugin's own versions decide
	rep, err := Install(o)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(o.ConfDir, "10-berth.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 2 || list.Plugins[1].Network.Type != "bandwidth" || len(rep.Dropped) != 0 {
		t.Fatalf("plugins %+v, dropped %+v: want cni-vlan + bandwidth", list.Plugins, rep.Dropped)
	}
	if list.CNIVersion != rep.CNIVersion || !strings.Contains(rep.CNIVersionReason, "bandwidth") {
		t.Errorf("cniVersion %q, report %q (%q): want the reason to name the bandwidth plugin",
			list.CNIVersion, rep.CNIVersion, rep.CNIVersionReason)
	}
}

func TestLoadConfErrors(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{"not json", `{`, "failed to parse"},
		{"no uplink", `{"vlan":1,"ipam":{"etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`,
			`"uplink" is required`},
		{"vlan 0", `{"uplink":"eth0","ipam":{"etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`,
			`"vlan" must be`},
		{"foreign ipam", `{"uplink":"eth0","vlan":5,"ipam":{"type":"host-local",` +
			`"etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`, `own etcd IPAM`},
		{"pool of another vlan", `{"uplink":"eth0","vlan":5,` +
			`"ipam":{"etcd":{"endpoints":["http://e:1"]},"poolSpec":{"name":"p","vlan":6,` +
			`"subnet":"10.0.0.0/24"}}}`, `is for VLAN 6`},
		{"no ipam", `{"uplink":"eth0","vlan":5}`, `"ipam" is required`},
		{"no pool", `{"uplink":"eth0","vlan":5,"ipam":{"etcd":{"endpoints":["http://e:1"]}}}`,
			`"pool" is required`},
		{"relative socket", `{"uplink":"eth0","vlan":5,"ipam":{"pool":"p","agentSocket":"ipam.sock"}}`,
			`absolute path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConf([]byte(tc.conf))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestInstallBerthIPAM: with BerthIPAM the slim berth-ipam build next to the
// running binary is installed as berth-ipam; without that build Install fails
// naming the missing file, and installs no berth-ipam.
func TestInstallBerthIPAM(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	o := installOptions(t, bin)
	o.BerthIPAM = true
	src := filepath.Join(filepath.Dir(self), BerthIPAMBinaryName)
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), src) {
		t.Fatalf("Install without %s: want an error naming it, got %v", src, err)
	}
	if _, err := os.Stat(filepath.Join(bin, "berth-ipam")); !os.IsNotExist(err) {
		t.Fatalf("berth-ipam installed although its source is missing: %v", err)
	}
	want := []byte("#!/bin/sh\n# stands for the slim berth-ipam build\n")
	if err := os.WriteFile(src, want, 0o755); err != nil {
		t.Skipf("cannot write next to the test binary: %v", err)
	}
	t.Cleanup(func() { os.Remove(src) })
	rep, err := Install(o)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(bin, "berth-ipam"))
	if err != nil || !bytes.Equal(got, want) || rep.BerthIPAM != filepath.Join(bin, "berth-ipam") {
		t.Fatalf("berth-ipam not installed from %s: %q %v (report %q)", src, got, err, rep.BerthIPAM)
	}
	if st, _ := os.Stat(rep.BerthIPAM); st.Mode().Perm() != 0o755 {
		t.Errorf("berth-ipam installed with mode %v, want 0755", st.Mode().Perm())
	}
}
