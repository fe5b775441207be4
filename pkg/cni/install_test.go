package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/berth-dev/berth/pkg/ipam"
)

func TestInstall(t *testing.T) {
	bin, conf, tls := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(tls, "ca.crt"), []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tls, "tls.crt"), nil, 0o600); err != nil { // empty key of the Secret
		t.Fatal(err)
	}
	o := InstallOptions{BinDir: bin, ConfDir: conf, ConfName: "10-berth.conflist", Bandwidth: true, TLSSourceDir: tls,
		Network: NetConf{Uplink: "eth1", VLAN: 100, Datapath: DatapathTCBPF}}
	o.Network.Name = "berth"
	o.Network.SetIPAM(&ipam.Config{Etcd: ipam.EtcdConfig{Endpoints: []string{"https://10.0.0.1:2379"}}, Pool: "vlan100"})
	if err := Install(o); err != nil {
		t.Fatalf("Install: %v", err)
	}
	if st, err := os.Stat(filepath.Join(bin, Name)); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary not installed executable: %v %v", st, err)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(conf, "10-berth.conflist"))
	if err != nil {
		t.Fatalf("installed conflist does not load: %v", err)
	}
	if list.CNIVersion != "1.0.0" { // no bandwidth plugin in the temp bin dir: stay compatible
		t.Errorf("cniVersion %q, want 1.0.0", list.CNIVersion)
	}
	if len(list.Plugins) != 2 || list.Plugins[0].Network.Type != Name || list.Plugins[1].Network.Type != "bandwidth" {
		t.Fatalf("plugins: %+v", list.Plugins)
	}
	nc, err := LoadConf(list.Plugins[0].Bytes)
	if err != nil {
		t.Fatalf("installed cni-vlan config is invalid: %v\n%s", err, list.Plugins[0].Bytes)
	}
	if nc.Uplink != "eth1" || nc.VLAN != 100 || nc.Datapath != DatapathTCBPF || nc.Bridge != "berth100" {
		t.Errorf("installed config: %+v", nc)
	}
	ic := nc.IPAMConfig()
	if ic.Etcd.TrustedCAFile != filepath.Join(conf, "berth-etcd", "ca.crt") || ic.Etcd.CertFile != "" {
		raw, _ := json.Marshal(ic)
		t.Errorf("etcd TLS files not installed as expected: %s", raw)
	}
}

func TestLoadConfErrors(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{"not json", `{`, "failed to parse"},
		{"no uplink", `{"vlan":1,"ipam":{"etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`, `"uplink" is required`},
		{"vlan 0", `{"uplink":"eth0","ipam":{"etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`, `"vlan" must be`},
		{"foreign ipam", `{"uplink":"eth0","vlan":5,"ipam":{"type":"host-local","etcd":{"endpoints":["http://e:1"]},"pool":"p"}}`, `own etcd IPAM`},
		{"pool of another vlan", `{"uplink":"eth0","vlan":5,"ipam":{"etcd":{"endpoints":["http://e:1"]},"poolSpec":{"name":"p","vlan":6,"subnet":"10.0.0.0/24"}}}`, `is for VLAN 6`},
		{"no etcd", `{"uplink":"eth0","vlan":5,"ipam":{"pool":"p"}}`, `etcd.endpoints`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConf([]byte(tc.conf))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
