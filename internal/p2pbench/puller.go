package p2pbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Ports of the DaemonSet (manifests/p2p/daemonset.yaml).
const (
	MirrorAddr = "127.0.0.1:5001"
	peerPort   = "5002"
	healthPort = "5003"
)

// Puller is one node's p2p-puller process.
type Puller struct {
	Host  *Host
	cmd   *exec.Cmd
	dir   string
	done  chan error
	trans *http.Transport
}

// PullerSpec is what every node's puller shares.
type PullerSpec struct {
	// Binary is the p2p-puller executable.
	Binary string
	// Registry is the --registry flag (host=URL).
	Registry string
	// PeerKeyFile holds the cluster's peer key.
	PeerKeyFile string
	// Peers is the static peer list (--peers), every node included.
	Peers string
	// Dir holds one directory per node (cache, log).
	Dir string
}

// StaticPeers returns the --peers list of the given hosts.
func StaticPeers(hosts []*Host) string {
	s := make([]string, len(hosts))
	for i, h := range hosts {
		s[i] = h.Name + "=" + net.JoinHostPort(h.IP, peerPort)
	}
	return strings.Join(s, ",")
}

// StartPuller starts p2p-puller in h's namespace with the flags the
// DaemonSet passes (mirror on loopback, peer API on all addresses,
// unlimited rates), a static peer list instead of Kubernetes discovery, and
// no containerd to configure. It returns once the mirror, the peer API and
// /readyz answer.
func StartPuller(ctx context.Context, spec PullerSpec, h *Host) (*Puller, error) {
	dir := filepath.Join(spec.Dir, h.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "puller.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	args := []string{"--net=" + h.Path(), "--", spec.Binary,
		"--node-name=" + h.Name,
		"--registry=" + spec.Registry,
		"--mirror-address=" + MirrorAddr,
		"--peer-address=:" + peerPort,
		"--peer-advertise-address=" + net.JoinHostPort(h.IP, peerPort),
		"--health-address=:" + healthPort,
		"--peers=" + spec.Peers,
		"--cache-dir=" + filepath.Join(dir, "cache"),
		"--cache-max-size=20Gi",
		"--write-hosts-toml=false",
		"--containerd-config-dir=" + filepath.Join(dir, "certs.d"),
		"--containerd-config=",
		"--peer-key-file=" + spec.PeerKeyFile,
		"--upload-rate=0",
		"--download-rate=0",
	}
	// nsenter execs the puller in place: the process is the puller itself.
	p := &Puller{Host: h, dir: dir, done: make(chan error, 1),
		cmd:   exec.Command("nsenter", args...),
		trans: &http.Transport{DialContext: h.DialContext, MaxIdleConnsPerHost: 4}}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start p2p-puller on %s: %w", h.Name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

func (p *Puller) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("p2p-puller on %s exited before it was ready (%v): %s", p.Host.Name, err, p.logTail())
		default:
		}
		if p.ready(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("p2p-puller on %s not ready after 20s: %s", p.Host.Name, p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Puller) ready(ctx context.Context) bool {
	for _, addr := range []string{MirrorAddr, "127.0.0.1:" + peerPort} {
		c, err := p.Host.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		_ = c.Close() // a probe
	}
	_, err := p.get(ctx, "/readyz")
	return err == nil
}

func (p *Puller) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+healthPort+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: p.trans, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s on %s: %s", path, p.Host.Name, resp.Status)
	}
	return b, err
}

// Metrics returns, for each name, the sum of that metric's samples (a name with its labels,
// e.g. `m{reason="x"}`, picks those samples), from one read of the puller's /metrics.
func (p *Puller) Metrics(ctx context.Context, names ...string) ([]float64, error) {
	b, err := p.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	sums := make([]float64, len(names))
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		for i, name := range names {
			if f[0] != name && !strings.HasPrefix(f[0], name+"{") {
				continue
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, fmt.Errorf("metric %s on %s: %q: %w", name, p.Host.Name, sc.Text(), err)
			}
			sums[i] += v
		}
	}
	return sums, nil
}

// Stop stops the puller (SIGTERM, then SIGKILL after 5 s) and removes its cache.
func (p *Puller) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		p.done <- <-p.done
	}
	p.trans.CloseIdleConnections()
	_ = os.RemoveAll(filepath.Join(p.dir, "cache"))
}

func (p *Puller) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "puller.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
