package hosts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAndCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	entries := []Entry{{Host: "docker.io", Server: "https://registry-1.docker.io"},
		{Host: "10.0.0.1:5000", Server: "http://10.0.0.1:5000"}}
	foreign := filepath.Join(dir, "docker.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte("server = \"https://mine\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "http://127.0.0.1:5001", "200ms", entries); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := Write(dir, "http://127.0.0.1:5001", "200ms", entries); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	b, _ := os.ReadFile(foreign + ".berth-backup")
	if string(b) != "server = \"https://mine\"\n" {
		t.Errorf("foreign hosts.toml was not backed up, backup = %q", b)
	}
	got, _ := os.ReadFile(foreign)
	for _, want := range []string{`server = "https://registry-1.docker.io"`,
		`[host."http://127.0.0.1:5001"]`, `dial_timeout = "200ms"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("hosts.toml lacks %s:\n%s", want, got)
		}
	}
	if p := Check(dir, "http://127.0.0.1:5001", "", entries); len(p) != 0 {
		t.Errorf("Check after Write: %v", p)
	}
	if p := Check(dir, "http://127.0.0.1:6000", "", entries[:1]); len(p) != 1 {
		t.Errorf("Check with another mirror: want 1 problem, got %v", p)
	}
}

func TestCheckConfigPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, config, want string
	}{
		{"unset", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n",
			"config_path is not set"},
		{"other dir", "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = " +
			"\"/etc/elsewhere\"\n", "set --containerd-config-dir=/etc/elsewhere"},
		{"ok v1", "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"" + dir + "\" # comment\n", ""},
		{"ok v2", "[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '" + dir + "'\n", ""},
		{"list, mirror first", "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = " +
			"\"" + dir + ":/etc/docker/certs.d\"\n", ""},
		{"list, mirror not first", "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = " +
			"\"/etc/docker/certs.d:" + dir + "\"\n", "set --containerd-config-dir=/etc/docker/certs.d " +
			"(containerd"},
		{"missing file", "", "failed to read containerd config"},
	}
	for _, tt := range tests {
		cfg := filepath.Join(t.TempDir(), "config.toml")
		if tt.config != "" {
			if err := os.WriteFile(cfg, []byte(tt.config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p := Check(dir, "http://127.0.0.1:5001", cfg, nil)
		if tt.want == "" && len(p) != 0 || tt.want != "" &&
			(len(p) != 1 || !strings.Contains(p[0], tt.want)) {
			t.Errorf("%s: Check = %q, want %q", tt.name, p, tt.want)
		}
	}
}
