package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
)

// kubeconfig points at a port nothing listens on: a bad config must fail before any API call.
const kubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`

func writeConfig(t *testing.T, args string) string {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: ` + kc + `}
leaderElection: {leaderElect: false}
profiles:
- schedulerName: berth-scheduler
  plugins:
    multiPoint:
      enabled: [{name: BerthBalance, weight: 5}]
  pluginConfig:
  - name: BerthBalance
    args:
` + args
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBadConfigFailsAtStart runs the real scheduler command with invalid plugin args and expects
// it to stop with a message naming every bad field. (Only one command run per test process: the
// upstream command applies the global logging config, which may happen once.)
func TestBadConfigFailsAtStart(t *testing.T) {
	path := writeConfig(t, "      networkWeight: -1\n      defaultNodeBandwidth: \"0\"\n")
	cmd := NewCommand()
	cmd.SetArgs([]string{"--config", path, "--secure-port=0"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	err := cmd.Execute()
	if err == nil {
		t.Fatal("scheduler started with invalid BerthBalance args")
	}
	for _, want := range []string{`initializing plugin "BerthBalance"`,
		"networkWeight: Invalid value: -1", "defaultNodeBandwidth"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestConfigDecoding decodes configs through the scheduler's scheme, the path --config takes.
func TestConfigDecoding(t *testing.T) {
	t.Parallel()
	decode := func(args string) (*schedconfig.KubeSchedulerConfiguration, error) {
		data, err := os.ReadFile(writeConfig(t, args))
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := schedscheme.Codecs.UniversalDecoder().Decode(data, nil, nil)
		if err != nil {
			return nil, err
		}
		return obj.(*schedconfig.KubeSchedulerConfiguration), nil
	}
	cfg, err := decode("      networkWeight: 3\n")
	if err != nil {
		t.Fatalf("decoding a valid config: %v", err)
	}
	args, ok := cfg.Profiles[0].PluginConfig[0].Args.(*config.BerthBalanceArgs)
	if !ok {
		t.Fatalf("args decoded as %T, want *config.BerthBalanceArgs", cfg.Profiles[0].PluginConfig[0].Args)
	}
	if args.NetworkWeight != 3 || args.CPUWeight != 1 || args.DefaultNodeBandwidth.String() != "10G" ||
		args.BandwidthOvercommitPercent != 100 {
		t.Fatalf("decoded args %+v, want networkWeight 3 and defaults for the rest", args)
	}
	if _, err := decode("      networkWeigth: 3\n"); err == nil ||
		!strings.Contains(err.Error(), `unknown field "networkWeigth"`) {
		t.Fatalf("a misspelt field decoded with err=%v, want an unknown-field error", err)
	}
}
