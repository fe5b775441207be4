package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd is one etcd member started by a test.
type Etcd struct {
	Name       string
	ClientURL  string
	PeerURL    string
	DataDir    string
	LogFile    string
	cmd        *exec.Cmd
	args       []string
	stoppedErr chan error
}

// EtcdBinary returns the etcd binary to use: $BERTH_ETCD, else etcd on PATH, else /usr/bin/etcd.
func EtcdBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BERTH_ETCD"); p != "" {
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	t.Fatalf("etcd not found: install Debian's etcd-server (`make deps`) or set BERTH_ETCD")
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago, and that no other call in
// this process has returned. It is picked below the kernel's ephemeral range (and above the
// local cluster's fixed ports, hack/cluster/env), so the outgoing connections of a busy test
// cannot take it between this call and the listen that follows.
func FreePort(t testing.TB) int {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	if low := ephemeralLow(); low > freePortMax {
		for range 200 {
			p := freePortMin + rand.IntN(freePortMax-freePortMin)
			if freePorts.given[p] {
				continue
			}
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				continue
			}
			l.Close()
			freePorts.given[p] = true
			return p
		}
	}
	// The ephemeral range starts low (or the band is full): let the kernel pick.
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("failed to find a free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !freePorts.given[p] {
			freePorts.given[p] = true
			return p
		}
	}
}

// The band FreePort picks from: above the local cluster's ports (up to 24007, glusterd),
// below the NodePort range (30000) and the usual ephemeral range (32768).
const freePortMin, freePortMax = 25000, 30000

var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// ephemeralLow is the first port of the kernel's ephemeral range (0 when unknown).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil {
		return 0
	}
	return low
}

// StartEtcd starts a single-member etcd on free loopback ports and stops it when the test ends.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	c := StartEtcdCluster(t, 1)
	return c[0]
}

// StartEtcdCluster starts an n-member etcd cluster on free loopback ports.
func StartEtcdCluster(t testing.TB, n int) []*Etcd {
	t.Helper()
	bin := EtcdBinary(t)
	base := etcdBaseDir(t)
	members := make([]*Etcd, n)
	var initial []string
	for i := range members {
		name := fmt.Sprintf("m%d", i)
		members[i] = &Etcd{
			Name:      name,
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			DataDir:   filepath.Join(base, name),
			LogFile:   filepath.Join(base, name+".log"),
		}
		initial = append(initial, name+"="+members[i].PeerURL)
	}
	for _, m := range members {
		m.args = []string{bin,
			"--name", m.Name, "--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(base),
		}
		if err := m.Start(); err != nil {
			t.Fatalf("start etcd %s: %v", m.Name, err)
		}
		t.Cleanup(func() { m.Kill() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := NewEtcdClient(t, members...)
	for {
		if _, err := cli.Put(ctx, "/berth-testenv-ready", "1"); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("etcd cluster not ready after 30s: %v (logs in %s)", err, base)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return members
}

// Start (re)starts the member with the data dir it had.
func (e *Etcd) Start() error {
	log, err := os.OpenFile(e.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	e.cmd = exec.Command(e.args[0], e.args[1:]...)
	e.cmd.Stdout, e.cmd.Stderr = log, log
	if err := e.cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", e.args[0], err)
	}
	e.stoppedErr = make(chan error, 1)
	go func() { e.stoppedErr <- e.cmd.Wait(); log.Close() }()
	return nil
}

// Kill stops the member at once (SIGKILL), as a crashed host would.
func (e *Etcd) Kill() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	_ = e.cmd.Process.Kill() // already dead is fine
	<-e.stoppedErr
	e.cmd = nil
}

// Endpoints returns the client URLs of members.
func Endpoints(members ...*Etcd) []string {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// NewEtcdClient returns a client of members, closed when the test ends.
func NewEtcdClient(t testing.TB, members ...*Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: Endpoints(members...),
		DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// etcdBaseDir returns a fresh directory for the members' data, on tmpfs (/dev/shm) when the
// machine has one: etcd fsyncs every transaction, and on a disk shared with other suites
// those fsyncs, not berth, would set the pace of the tests. BERTH_ETCD_ON_DISK=1 keeps it on
// disk, as a production etcd is (the benchmarks set it). Removed when the test ends.
func etcdBaseDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() && os.Getenv("BERTH_ETCD_ON_DISK") != "1" {
		if d, err := os.MkdirTemp("/dev/shm", "berth-etcd-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}
