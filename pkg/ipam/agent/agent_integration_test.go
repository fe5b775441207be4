//go:build integration

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// TestMain doubles as the agent process of TestAgentKilledMidAdd: with
// BERTH_AGENT_HELPER set to a JSON helperConf, the test binary runs the
// daemon `cni-vlan agent` runs.
func TestMain(m *testing.M) {
	if raw := os.Getenv("BERTH_AGENT_HELPER"); raw != "" {
		var h helperConf
		if err := json.Unmarshal([]byte(raw), &h); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c := DaemonConfig{
			Etcd: ipam.EtcdConfig{Endpoints: h.Endpoints}, ProbeAddr: "0",
			Options: Options{Node: h.Node, Socket: h.Socket, StateDir: h.StateDir,
				CallTimeout: 2 * time.Second, SyncInterval: 200 * time.Millisecond},
		}
		if os.Getenv("BERTH_AGENT_STALL") != "" {
			c.stallAdd = func() { select {} } // killed here by the test
		}
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := RunDaemon(ctx, c)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testPool = "p"

// poolConf is the "ipam" object of the tests' network: a /24 and a buffer of 4.
var poolConf = json.RawMessage(`{"poolSpec":{"name":"p","vlan":100,"subnet":"10.100.0.0/24"},"nodeBuffer":4}`)

// node is a simulated node: its agent runs in this process, with its own
// etcd connection, socket and journal directory.
type node struct {
	name, dir, sock string
	a               *Agent
	cancel          context.CancelFunc
	done            chan error
}

func newAlloc(t *testing.T, eps []string) *ipam.EtcdAllocator {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	a, err := ipam.NewEtcd(cli, "", ipam.WithAttemptTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func startNode(t *testing.T, eps []string, name, dir string) *node {
	t.Helper()
	n := &node{name: name, dir: dir, sock: filepath.Join(dir, "ipam.sock"), done: make(chan error, 1)}
	a, err := New(newAlloc(t, eps), Options{Node: name, Socket: n.sock, StateDir: dir,
		CallTimeout: 2 * time.Second, SyncInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.a = a
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- a.Run(ctx) }()
	// Asked, not stat'ed: a restarted agent's socket file may be its predecessor's for a moment.
	// An empty STATUS is refused at once, without etcd: any answer will do.
	waitFor(t, 10*time.Second, "the agent to answer on its socket", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		_, err := agentapi.Call(cctx, n.sock, &agentapi.Request{Verb: agentapi.VerbStatus})
		return !errors.Is(err, agentapi.ErrAgentUnavailable)
	})
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

// waitFor polls cond (every 50 ms) until it holds; the conditions are state
// the agent changes in the background, with no event to wait on.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func podRequest(verb, id string) *agentapi.Request {
	return &agentapi.Request{Verb: verb, ContainerID: id, IfName: "eth0", Network: "net", VLAN: 100,
		IPAM: poolConf,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id + ";K8S_POD_UID=uid-" + id}
}

// call sends a request on sock as the plugin does; the error is the CNI error the plugin would return.
func call(sock string, req *agentapi.Request) (*agentapi.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := agentapi.Call(ctx, sock, req)
	if err := agentapi.CNIError(resp, err); err != nil {
		return nil, err
	}
	return resp, nil
}

func addPod(sock, id string) (netip.Addr, error) {
	resp, err := call(sock, podRequest(agentapi.VerbAdd, id))
	if err != nil {
		return netip.Addr{}, err
	}
	return resp.Allocation.IP.Addr(), nil
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// checkPool asserts what etcd holds: exactly the running pods' addresses, and
// each node's buffer; nothing else (no leak), nothing twice.
func checkPool(t *testing.T, alloc *ipam.EtcdAllocator, running map[string]netip.Addr, nodes ...*node) {
	t.Helper()
	all, err := alloc.ListAllocations(t.Context(), testPool)
	if err != nil {
		t.Fatal(err)
	}
	buffered := map[netip.Addr]string{}
	for _, n := range nodes {
		n.a.mu.Lock()
		for _, f := range n.a.st.Pools[testPool].Free {
			buffered[f.IP.Addr()] = n.name
		}
		n.a.mu.Unlock()
	}
	pods := map[string]netip.Addr{}
	for _, al := range all {
		if al.Handle.IsBuffer() {
			if buffered[al.IP.Addr()] != al.Handle.Node {
				t.Errorf("etcd holds %s for the buffer of %s, which does not have it in its buffer (leaked)",
					al.IP.Addr(), al.Handle.Node)
			}
			delete(buffered, al.IP.Addr())
			continue
		}
		pods[al.Handle.ContainerID] = al.IP.Addr()
	}
	for ip, n := range buffered {
		t.Errorf("%s's buffer has %s, which etcd does not hold for it (could be handed out twice)", n, ip)
	}
	for id, ip := range running {
		if pods[id] != ip {
			t.Errorf("pod %s runs with %s, etcd says %v", id, ip, pods[id])
		}
		delete(pods, id)
	}
	for id, ip := range pods {
		t.Errorf("etcd still holds %s for %s, which is not running (leaked)", ip, id)
	}
}

func distinct(t *testing.T, running map[string]netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for id, ip := range running {
		if o, dup := seen[ip]; dup {
			t.Errorf("%s handed out twice: %s and %s", ip, o, id)
		}
		seen[ip] = id
	}
}

// TestAgentEtcdDown60s: etcd is down for 60 s while pods are created and
// deleted on two nodes. ADDs get the nodes' buffered addresses (and code 11,
// try again, once a buffer is empty), DELs succeed at once, an agent restarted
// mid-outage keeps its journal, and after etcd returns the pool holds exactly
// the running pods and the refilled buffers: no duplicate, no leak.
func TestAgentEtcdDown60s(t *testing.T) {
	e := testenv.StartEtcd(t)
	eps := testenv.Endpoints(e)
	nodes := []*node{startNode(t, eps, "node-a", t.TempDir()), startNode(t, eps, "node-b", t.TempDir())}
	running := map[string]netip.Addr{}
	for _, n := range nodes {
		for i := range 3 {
			id := fmt.Sprintf("%s-up-%d", n.name, i)
			ip, err := addPod(n.sock, id)
			if err != nil {
				t.Fatalf("ADD %s with etcd up: %v", id, err)
			}
			running[id] = ip
		}
	}
	for _, n := range nodes {
		waitFor(t, 20*time.Second, n.name+"'s buffer to fill",
			func() bool { return n.a.snapshotBufferedPool(testPool) == 4 })
	}

	e.Kill()
	killed := time.Now()
	for _, n := range nodes {
		for i := range 2 { // DEL of pods allocated before the outage: journalled, answered at once
			id := fmt.Sprintf("%s-up-%d", n.name, i)
			start := time.Now()
			if _, err := call(n.sock, podRequest(agentapi.VerbDel, id)); err != nil {
				t.Fatalf("DEL %s with etcd down: %v", id, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("DEL %s with etcd down took %v, want at most the 2 s call timeout", id, d)
			}
			delete(running, id)
		}
		for i := range 4 {
			id := fmt.Sprintf("%s-down-%d", n.name, i)
			ip, err := addPod(n.sock, id)
			if err != nil {
				t.Fatalf("ADD %s with etcd down (buffered address %d of 4): %v", id, i+1, err)
			}
			running[id] = ip
		}
		if _, err := addPod(n.sock, n.name+"-down-none"); cniCode(err) != types.ErrTryAgainLater {
			t.Fatalf("ADD with etcd down and the buffer empty: got %v, want CNI code 11", err)
		}
		// A pod started during the outage and deleted again: its address goes back to the buffer and out again.
		gone := n.name + "-down-0"
		if _, err := call(n.sock, podRequest(agentapi.VerbDel, gone)); err != nil {
			t.Fatalf("DEL %s with etcd down: %v", gone, err)
		}
		ip, err := addPod(n.sock, n.name+"-down-again")
		if err != nil || ip != running[gone] {
			t.Fatalf("ADD after a DEL during the outage: got %v, %v; want %s back from the buffer", ip, err,
				running[gone])
		}
		delete(running, gone)
		running[n.name+"-down-again"] = ip
	}
	distinct(t, running)

	// The agent of node-b restarts mid-outage (a DaemonSet update): the journal survives.
	b := nodes[1]
	b.stop()
	nodes[1] = startNode(t, eps, b.name, b.dir)
	if ip, err := addPod(nodes[1].sock, "node-b-down-1"); err != nil || ip != running["node-b-down-1"] {
		j, _ := os.ReadFile(filepath.Join(b.dir, journalFile))
		t.Fatalf("repeated ADD after the agent restarted: got %v, %v, want %s from the journal %s", ip,
			err, running["node-b-down-1"], j)
	}
	if n := nodes[1].a.snapshotPending(); n == 0 {
		t.Fatal("the restarted agent lost its journal")
	}

	time.Sleep(time.Until(killed.Add(60 * time.Second))) // the outage under test lasts 60 s
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 60*time.Second, n.name+"'s journal to reach etcd and its buffer to refill", func() bool {
			return n.a.snapshotPending() == 0 && n.a.snapshotBufferedPool(testPool) == 4
		})
	}
	checkPool(t, newAlloc(t, eps), running, nodes...)
}

// helperConf is what TestMain's agent process is told.
type helperConf struct {
	Endpoints              []string
	Node, Socket, StateDir string
}

// agentProc is an agent in its own process (this test binary, see TestMain), so it can be killed.
type agentProc struct {
	cmd  *exec.Cmd
	sock string
}

func startAgentProc(t *testing.T, eps []string, dir string, stall bool) *agentProc {
	t.Helper()
	sock := filepath.Join(dir, "ipam.sock")
	_ = os.Remove(sock) // left by the killed one: wait for the new agent's
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	conf, err := json.Marshal(helperConf{Endpoints: eps, Node: "node-k", Socket: sock, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "BERTH_AGENT_HELPER="+string(conf))
	if stall {
		cmd.Env = append(cmd.Env, "BERTH_AGENT_STALL=1")
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, sock: sock}
	t.Cleanup(p.kill)
	waitFor(t, 10*time.Second, "the agent process's socket",
		func() bool { _, err := os.Stat(sock); return err == nil })
	return p
}

func (p *agentProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL) // already gone is fine
		_ = p.cmd.Wait()
	}
}

// TestAgentKilledMidAdd: the agent is killed (SIGKILL) after an ADD has its
// address and before it answers, once with etcd up (the address is in etcd)
// and once with etcd down (the address is journalled). The plugin gets CNI
// code 11 (try again), and the retried ADD, served by the restarted agent,
// gets the same address: never a second one, never one given twice.
func TestAgentKilledMidAdd(t *testing.T) {
	e := testenv.StartEtcd(t)
	eps := testenv.Endpoints(e)
	alloc := newAlloc(t, eps)
	dir := t.TempDir()
	addKilled := func(p *agentProc, id string) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { _, err := addPod(p.sock, id); errc <- err }()
		taken := func() bool { // the address is taken: in the journal, or in etcd
			st, _ := loadState(filepath.Join(dir, journalFile))
			if _, ok := st.pendingAssign(ipam.Handle{ContainerID: id, IfName: "eth0"}); ok {
				return true
			}
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond) // etcd may be down
			defer cancel()
			_, found, _ := alloc.Lookup(ctx, ipam.Handle{ContainerID: id, IfName: "eth0"})
			return found
		}
		waitFor(t, 20*time.Second, "the ADD of "+id+" to take its address", taken)
		p.kill()
		if err := <-errc; cniCode(err) != types.ErrTryAgainLater {
			t.Fatalf("ADD %s with the agent killed mid-call: got %v, want CNI code 11", id, err)
		}
	}

	addKilled(startAgentProc(t, eps, dir, true), "online")
	p := startAgentProc(t, eps, dir, false)
	ip1, err := addPod(p.sock, "online")
	if err != nil {
		t.Fatalf("retried ADD: %v", err)
	}
	if al, _, _ := alloc.Lookup(t.Context(), ipam.Handle{ContainerID: "online",
		IfName: "eth0"}); al.IP.Addr() != ip1 {
		t.Fatalf("retried ADD got %s, etcd holds %s for it", ip1, al.IP.Addr())
	}
	waitFor(t, 20*time.Second, "the buffer to fill", func() bool {
		all, _ := alloc.ListAllocations(t.Context(), testPool)
		n := 0
		for _, al := range all {
			if al.Handle.IsBuffer() {
				n++
			}
		}
		return n == 4
	})
	p.kill()

	e.Kill()
	addKilled(startAgentProc(t, eps, dir, true), "offline")
	p = startAgentProc(t, eps, dir, false)
	ip2, err := addPod(p.sock, "offline")
	if err != nil {
		t.Fatalf("retried ADD with etcd down: %v", err)
	}
	st, err := loadState(filepath.Join(dir, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 1 || st.Pending[0].Alloc.IP.Addr() != ip2 || len(st.Pools[testPool].Free) != 3 {
		t.Fatalf("after the retried ADD: journal %+v, %d buffered; want one assignment of %s and 3 "+
			"buffered", st.Pending, len(st.Pools[testPool].Free), ip2)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the journal to reach etcd", func() bool {
		al, found, _ := alloc.Lookup(t.Context(), ipam.Handle{ContainerID: "offline", IfName: "eth0"})
		return found && al.IP.Addr() == ip2
	})
	if ip1 == ip2 {
		t.Fatalf("both pods got %s", ip1)
	}
}

// TestAgentTenNodesFillPoolWithMemberKilled: 10 nodes start 100 pods each
// into a pool of exactly 1,000 addresses while one member of a 3-member etcd
// is killed mid-run. The nodes' buffers go back to the pool as it fills, so
// every pod gets an address (retrying on code 11 as the kubelet does): 1,000
// distinct addresses, and etcd holds exactly those (nothing leaked, no buffer left).
func TestAgentTenNodesFillPoolWithMemberKilled(t *testing.T) {
	members := testenv.StartEtcdCluster(t, 3)
	eps := testenv.Endpoints(members...)
	full := json.RawMessage(`{"poolSpec":{"name":"p","vlan":100,"subnet":"10.100.0.0/22",
		"reserved":[{"start":"10.100.3.234","end":"10.100.3.254"}]},"nodeBuffer":4}`)
	var nodes []*node
	for i := range 10 {
		nodes = append(nodes, startNode(t, eps, fmt.Sprintf("n%d", i), t.TempDir()))
	}
	type result struct {
		id  string
		ip  netip.Addr
		err error
	}
	results := make(chan result, 1000)
	var started sync.WaitGroup
	deadline := time.Now().Add(3 * time.Minute)
	for _, n := range nodes {
		for w := range 4 {
			started.Add(1)
			go func() {
				defer started.Done()
				for i := w; i < 100; i += 4 {
					id := fmt.Sprintf("%s-pod-%d", n.name, i)
					req := podRequest(agentapi.VerbAdd, id)
					req.IPAM = full
					for {
						resp, err := call(n.sock, req)
						if err == nil {
							results <- result{id: id, ip: resp.Allocation.IP.Addr()}
							break
						}
						if c := cniCode(err); (c != types.ErrTryAgainLater && c != ipam.CodeExhausted) ||
							time.Now().After(deadline) {
							results <- result{id: id, err: err}
							break
						}
						time.Sleep(100 * time.Millisecond) // the kubelet's retry, much shortened
					}
				}
			}()
		}
	}
	running := map[string]netip.Addr{}
	for range 1000 {
		r := <-results
		if r.err != nil {
			t.Errorf("ADD %s: %v", r.id, r.err)
			continue
		}
		running[r.id] = r.ip
		if len(running) == 300 {
			members[0].Kill()
		}
	}
	started.Wait()
	if len(running) != 1000 {
		t.Fatalf("%d of 1000 pods got an address", len(running))
	}
	distinct(t, running)
	for _, n := range nodes {
		waitFor(t, 60*time.Second, n.name+"'s journal to reach etcd",
			func() bool { return n.a.snapshotPending() == 0 })
	}
	checkPool(t, newAlloc(t, eps[1:]), running, nodes...)
	for _, n := range nodes {
		if b := n.a.snapshotBufferedPool(testPool); b != 0 {
			t.Errorf("%s still buffers %d addresses of a full pool", n.name, b)
		}
	}
}

// TestAgentBatchesConcurrentAdds: 50 pods starting at once on one node cost a handful of etcd
// transactions, not 50, and still get 50 distinct addresses that etcd records as theirs; a
// repeated ADD of one of them gets its address back.
func TestAgentBatchesConcurrentAdds(t *testing.T) {
	e := testenv.StartEtcd(t)
	eps := testenv.Endpoints(e)
	n := startNode(t, eps, "n0", t.TempDir())
	if _, err := call(n.sock, podRequest(agentapi.VerbAdd, "warm-up")); err != nil { // pool created
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the buffer to fill", func() bool { return n.a.snapshotBufferedPool(testPool) > 0 })
	before := n.a.alloc.Counters()
	var mu sync.Mutex
	running := map[string]netip.Addr{"warm-up": {}}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			id := fmt.Sprintf("pod-%d", i)
			resp, err := call(n.sock, podRequest(agentapi.VerbAdd, id))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("ADD %s: %v", id, err)
				return
			}
			running[id] = resp.Allocation.IP.Addr()
		})
	}
	wg.Wait()
	after := n.a.alloc.Counters()
	delete(running, "warm-up")
	if len(running) != 50 {
		t.Fatalf("%d of 50 pods got an address", len(running))
	}
	distinct(t, running)
	txns, allocs := after.Txns-before.Txns, after.Allocations-before.Allocations
	t.Logf("50 concurrent ADDs: %d allocations in %d etcd write transactions", allocs, txns)
	if txns > 20 {
		t.Errorf("50 concurrent ADDs took %d etcd write transactions, want them batched (at most 20)", txns)
	}
	resp, err := call(n.sock, podRequest(agentapi.VerbAdd, "pod-7"))
	if err != nil || resp.Allocation.IP.Addr() != running["pod-7"] || !resp.Existed {
		t.Errorf("repeated ADD of pod-7: %v (existed %v, err %v), want %s", resp, resp != nil && resp.Existed,
			err, running["pod-7"])
	}
	alloc := newAlloc(t, eps)
	for id, ip := range running {
		al, found, err := alloc.Lookup(t.Context(), ipam.Handle{ContainerID: id, IfName: "eth0"})
		if err != nil || !found || al.IP.Addr() != ip {
			t.Errorf("etcd holds %v (found %v, %v) for %s, the agent answered %s", al.IP, found, err, id, ip)
		}
	}
}
