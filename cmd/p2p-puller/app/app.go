package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/p2p"
	"github.com/berth-dev/berth/pkg/p2p/hosts"
	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// options are the daemon's flags (AddFlags); config turns them into a p2p.Config.
type options struct {
	nodeName, advertise, mirrorAddr, peerAddr, healthAddr string
	registries                                            []string
	cacheDir, cacheMax, pieceSize, maxBlob                string
	gcHigh, gcLow                                         float64
	staticPeers, namespace, selector, kubeconfig          string
	peerKeyFile, pullSecretFile                           string
	uploadRate, downloadRate                              string
	containerdDir, containerdConfig, dialTimeout          string
	writeHosts                                            bool
	grantTTL, pieceWait                                   time.Duration
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (o *options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.nodeName, "node-name", envOr("NODE_NAME", ""),
		"this node's name (env NODE_NAME; the DaemonSet sets it from spec.nodeName)")
	fs.StringVar(&o.advertise, "peer-advertise-address", "",
		"host:port peers reach this node's peer API at (default: $POD_IP and the --peer-address port)")
	fs.StringVar(&o.mirrorAddr, "mirror-address", "127.0.0.1:5001",
		"loopback address of the registry mirror containerd uses")
	fs.StringVar(&o.peerAddr, "peer-address", ":5002",
		"address of the peer API (must be reachable from the other nodes)")
	fs.StringVar(&o.healthAddr, "health-address", ":5003",
		"address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringArrayVar(&o.registries, "registry", nil,
		"mirrored registry as host=URL, repeatable, e.g. docker.io=https://registry-1.docker.io; the "+
			"first serves clients that send no ?ns=")
	fs.StringVar(&o.cacheDir, "cache-dir", "/var/lib/berth/p2p", "blob cache directory")
	fs.StringVar(&o.cacheMax, "cache-max-size", "20Gi",
		"cache size limit (a Kubernetes quantity; 0: unlimited)")
	fs.Float64Var(&o.gcHigh, "gc-high-watermark", 0.9,
		"GC starts when the cache holds more than this fraction of --cache-max-size")
	fs.Float64Var(&o.gcLow, "gc-low-watermark", 0.8,
		"GC evicts least recently used blobs down to this fraction")
	fs.StringVar(&o.pieceSize, "piece-size", "1Mi",
		"unit of peer transfer and verification (64Ki to 16Mi)")
	fs.StringVar(&o.maxBlob, "max-blob-size", "64Gi",
		"largest blob the mirror serves; larger sizes a manifest declares are checked with the "+
			"registry, larger blobs refused")
	fs.DurationVar(&o.pieceWait, "piece-wait", 15*time.Second,
		"how long a peer holds a request for a piece it is still downloading")
	fs.StringVar(&o.staticPeers, "peers", "",
		"static peer list name=host:port,... (instead of Kubernetes discovery; for tests and "+
			"non-Kubernetes nodes)")
	fs.StringVar(&o.namespace, "namespace", envOr("POD_NAMESPACE", "berth-system"),
		"namespace of the p2p-puller pods (env POD_NAMESPACE)")
	fs.StringVar(&o.selector, "peer-selector", "app.kubernetes.io/name=p2p-puller",
		"label selector of the p2p-puller pods")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for peer discovery (default: in-cluster)")
	fs.StringVar(&o.peerKeyFile, "peer-key-file", "",
		"file with the cluster-wide secret that signs peer requests (when absent: Secret "+
			PeerKeySecret+" in --namespace, read through the API and waited for)")
	fs.StringVar(&o.pullSecretFile, "pull-secret-file", "",
		"a .dockerconfigjson whose credentials preheat uses (clients always use their own)")
	fs.StringVar(&o.uploadRate, "upload-rate", "0",
		"max bytes/s served to peers (quantity, e.g. 200Mi; 0: unlimited)")
	fs.StringVar(&o.downloadRate, "download-rate", "0",
		"max bytes/s downloaded from peers and upstreams together (0: unlimited)")
	fs.StringVar(&o.containerdDir, "containerd-config-dir", "/etc/containerd/certs.d",
		"containerd's registry config_path, where hosts.toml files go")
	fs.StringVar(&o.containerdConfig, "containerd-config", "/etc/containerd/config.toml",
		"containerd's config.toml, checked for config_path (empty: skip the check)")
	fs.StringVar(&o.dialTimeout, "containerd-dial-timeout", "200ms",
		"dial_timeout written to hosts.toml so containerd falls back fast when the mirror is down "+
			"(empty: omit)")
	fs.BoolVar(&o.writeHosts, "write-hosts-toml", true, "write hosts.toml for every --registry at start")
	fs.DurationVar(&o.grantTTL, "grant-ttl", time.Hour,
		"how long a manifest fetched with some credentials lets them (or a peer showing it) read its blobs")
}

// Validate refuses flag values the daemon cannot start with, naming the flag (run does the
// same through config).
func (o *options) Validate() error {
	_, _, err := o.config()
	return err
}

func quantity(flag, s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("invalid --%s %q: want a quantity like 512Mi or 10Gi: %w", flag, s, err)
	}
	return q.Value(), nil
}

// NewCommand returns the p2p-puller root command.
func NewCommand() *cobra.Command { return newCommand(&options{}) }

func newCommand(o *options) *cobra.Command {
	cmd := daemon.NewRootCommand("p2p-puller",
		"berth node-local registry mirror that fetches image layers from peers")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, cancel := daemon.SignalContext()
		defer cancel()
		// Embedders (tests) stop it through the command's context.
		stop := context.AfterFunc(cmd.Context(), cancel)
		defer stop()
		return run(ctx, o)
	}
	o.AddFlags(cmd.Flags())
	cmd.AddCommand(newPreheatCommand(), newCheckCommand(), newPeerKeyCommand())
	return cmd
}

func (o *options) config() (p2p.Config, []hosts.Entry, error) {
	var cfg p2p.Config
	var entries []hosts.Entry
	for _, s := range o.registries {
		r, err := p2p.ParseRegistry(s)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Registries = append(cfg.Registries, r)
		entries = append(entries, hosts.Entry{Host: r.Host, Server: r.URL.String()})
	}
	var err error
	if cfg.CacheMaxBytes, err = quantity("cache-max-size", o.cacheMax); err != nil {
		return cfg, nil, err
	}
	if cfg.PieceSize, err = quantity("piece-size", o.pieceSize); err != nil {
		return cfg, nil, err
	}
	if cfg.MaxBlobBytes, err = quantity("max-blob-size", o.maxBlob); err != nil {
		return cfg, nil, err
	}
	if cfg.UploadBytesPerSec, err = quantity("upload-rate", o.uploadRate); err != nil {
		return cfg, nil, err
	}
	if cfg.DownloadBytesPerSec, err = quantity("download-rate", o.downloadRate); err != nil {
		return cfg, nil, err
	}
	if o.advertise == "" {
		_, port, err := net.SplitHostPort(o.peerAddr)
		if err != nil || os.Getenv("POD_IP") == "" {
			return cfg, nil, fmt.Errorf("--peer-advertise-address is required when POD_IP is not set (peer "+
				"address %q)", o.peerAddr)
		}
		o.advertise = net.JoinHostPort(os.Getenv("POD_IP"), port)
	}
	cfg.Self = peers.Peer{Name: o.nodeName, Addr: o.advertise}
	cfg.MirrorAddr, cfg.PeerAddr, cfg.CacheDir = o.mirrorAddr, o.peerAddr, o.cacheDir
	cfg.GCHigh, cfg.GCLow, cfg.GrantTTL, cfg.PieceWait = o.gcHigh, o.gcLow, o.grantTTL, o.pieceWait
	// The pull secret comes from an optional Secret: missing means "not configured".
	if _, serr := os.Stat(o.pullSecretFile); o.pullSecretFile != "" && serr == nil {
		if cfg.PullSecrets, err = readPullSecret(o.pullSecretFile); err != nil {
			return cfg, nil, err
		}
	}
	return cfg, entries, nil
}

// readPullSecret reads a kubernetes.io/dockerconfigjson secret's content.
func readPullSecret(path string) (map[string]authn.AuthConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read --pull-secret-file: %w", err)
	}
	var f struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("--pull-secret-file %s is not a .dockerconfigjson ({\"auths\": {...}}): %w", path, err)
	}
	return f.Auths, nil
}

func (o *options) discovery(ctx context.Context, self peers.Peer) (peers.Discovery, error) {
	if o.staticPeers != "" {
		s, err := peers.ParseStatic(o.staticPeers)
		if err != nil {
			return nil, err
		}
		for _, p := range s {
			if p.Name == self.Name {
				return s, nil
			}
		}
		return append(s, self), nil
	}
	client, err := o.kubeClient()
	if err != nil {
		return nil, fmt.Errorf("peer discovery (use --peers for a static list): %w", err)
	}
	_, port, _ := net.SplitHostPort(self.Addr)
	p, _ := strconv.Atoi(port)
	k, err := peers.NewKube(client, o.namespace, o.selector, p, self)
	if err != nil {
		return nil, err
	}
	return k, k.Run(ctx)
}

func run(ctx context.Context, o *options) error {
	log := klog.FromContext(ctx)
	cfg, entries, err := o.config()
	if err != nil {
		return err
	}
	if cfg.PeerKey, err = o.peerKey(ctx, true); err != nil {
		return err
	}
	mirrorURL := "http://" + o.mirrorAddr
	if o.writeHosts {
		if err := hosts.Write(o.containerdDir, mirrorURL, o.dialTimeout, entries); err != nil {
			return err
		}
		log.Info("Wrote containerd hosts.toml", "dir", o.containerdDir, "registries", len(entries))
	}
	for _, problem := range hosts.Check(o.containerdDir, mirrorURL, o.containerdConfig, entries) {
		log.Info("WARNING: containerd will not use the mirror", "problem", problem)
	}
	if cfg.Discovery, err = o.discovery(ctx, cfg.Self); err != nil {
		return err
	}
	probes := daemon.NewProbes()
	cfg.Registerer = probes.Registry
	puller, err := p2p.New(cfg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return puller.Run(gctx) })
	g.Go(func() error { return daemon.Serve(gctx, o.healthAddr, probes.Handler()) })
	return g.Wait()
}

func newCheckCommand() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "check-hosts",
		Short: "check that containerd reaches the registries through the mirror (hosts.toml and config_path)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, entries, err := o.config()
			if err != nil && !strings.Contains(err.Error(), "peer-advertise") {
				return err
			}
			problems := hosts.Check(o.containerdDir, "http://"+o.mirrorAddr, o.containerdConfig, entries)
			for _, p := range problems {
				fmt.Fprintln(cmd.OutOrStdout(), "PROBLEM:", p)
			}
			if len(problems) > 0 {
				return fmt.Errorf("%d problem(s): containerd will not use the mirror", len(problems))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ok: containerd reaches", len(entries), "registries through",
				o.mirrorAddr)
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
