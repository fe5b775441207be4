// Package hosts writes and checks containerd's registry host configuration
// (<config_path>/<registry>/hosts.toml) so that containerd asks the node's
// p2p-puller mirror first and keeps the real registry as the fallback.
package hosts

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Marker is the first line of every hosts.toml p2p-puller writes; a file
// without it belongs to someone else and is backed up before it is replaced.
const Marker = "# Written by berth p2p-puller: containerd asks the node-local mirror first, then " +
	"the registry."

// Entry is one registry containerd should reach through the mirror.
type Entry struct {
	// Host is the registry name as it appears in image references ("docker.io", "ghcr.io",
	// "10.0.0.1:5000").
	Host string
	// Server is the upstream URL containerd falls back to ("https://registry-1.docker.io").
	Server string
}

// Render returns the hosts.toml for e with mirror (e.g. "http://127.0.0.1:5001")
// first. dialTimeout ("200ms") makes containerd give up on a dead mirror fast;
// empty leaves it out (containerd before 1.7 ignores it anyway).
func Render(e Entry, mirror, dialTimeout string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nserver = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", Marker,
		e.Server, mirror)
	if dialTimeout != "" {
		fmt.Fprintf(&b, "  dial_timeout = %q\n", dialTimeout)
	}
	return b.String()
}

// Write writes hosts.toml for every entry under configDir, atomically. A
// foreign hosts.toml is kept as hosts.toml.berth-backup.
func Write(configDir, mirror, dialTimeout string, entries []Entry) error {
	for _, e := range entries {
		dir := filepath.Join(configDir, hostDir(e.Host))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("failed to create containerd host dir %q: %w", dir, err)
		}
		path := filepath.Join(dir, "hosts.toml")
		old, err := os.ReadFile(path)
		switch {
		case err == nil && !bytes.HasPrefix(old, []byte(Marker)):
			if err := os.WriteFile(path+".berth-backup", old, 0o644); err != nil {
				return fmt.Errorf("failed to back up %q: %w", path, err)
			}
		case err != nil && !os.IsNotExist(err):
			return fmt.Errorf("failed to read %q: %w", path, err)
		}
		want := Render(e, mirror, dialTimeout)
		if string(old) == want {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(want), 0o644); err != nil {
			return fmt.Errorf("failed to write %q: %w", tmp, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("failed to install %q: %w", path, err)
		}
	}
	return nil
}

// Check reports what is wrong with the node's setup, one problem per string:
// hosts.toml missing or not pointing at the mirror, and containerd's
// config_path not set to configDir (then containerd never reads hosts.toml).
// containerdConfig may be empty to skip that part.
func Check(configDir, mirror, containerdConfig string, entries []Entry) []string {
	var problems []string
	for _, e := range entries {
		path := filepath.Join(configDir, hostDir(e.Host), "hosts.toml")
		b, err := os.ReadFile(path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", path, err))
			continue
		}
		if !strings.Contains(string(b), fmt.Sprintf("[host.%q]", mirror)) {
			problems = append(problems, fmt.Sprintf("%s does not list the mirror %s", path, mirror))
		}
	}
	if containerdConfig == "" {
		return problems
	}
	got, err := ConfigPath(containerdConfig)
	// containerd takes a colon-separated list and uses the first directory
	// that has the registry's host dir: the mirror must be in the first one.
	first, _, _ := strings.Cut(got, ":")
	switch {
	case err != nil:
		problems = append(problems, err.Error())
	case got == "":
		problems = append(problems, fmt.Sprintf("containerd's config_path is not set in %s: containerd "+
			"ignores hosts.toml and pulls "+
			"straight from the registry. Add to that file:\n  "+
			"[plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = %q\n"+
			"and restart containerd", containerdConfig, configDir))
	case filepath.Clean(first) != filepath.Clean(configDir):
		problems = append(problems, fmt.Sprintf("containerd's config_path is %q in %s but p2p-puller "+
			"writes hosts.toml to %q: "+
			"set --containerd-config-dir=%s (containerd reads the first directory of the list first)", got,
			containerdConfig, configDir, first))
	}
	return problems
}

// ConfigPath returns the CRI registry config_path of a containerd
// config.toml ("" when unset). It reads the one key it needs line by line:
// containerd 1.x and 2.x both spell it `config_path = "..."` inside a
// [plugins."io.containerd.grpc.v1.cri".registry] (1.x) or
// [plugins."io.containerd.cri.v1.images".registry] (2.x) table.
func ConfigPath(containerdConfig string) (string, error) {
	f, err := os.Open(containerdConfig)
	if err != nil {
		return "", fmt.Errorf("failed to read containerd config %q: %w", containerdConfig, err)
	}
	defer f.Close()
	table := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[] ")
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) != "config_path" || !strings.HasSuffix(table, ".registry") {
			continue
		}
		val = strings.TrimSpace(val)
		if i := strings.Index(val, "#"); i > 0 && !strings.HasPrefix(val, "#") {
			val = strings.TrimSpace(val[:i])
		}
		return strings.Trim(val, `"'`), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("failed to read containerd config %q: %w", containerdConfig, err)
	}
	return "", nil
}

// hostDir is containerd's directory name for a registry host: "host:port"
// stays as is; docker.io is the exception containerd itself maps.
func hostDir(host string) string {
	if host == "registry-1.docker.io" || host == "index.docker.io" {
		return "docker.io"
	}
	return host
}
