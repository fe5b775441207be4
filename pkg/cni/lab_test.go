//go:build integration || vmtest

package cni

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// lab is two simulated hosts and a simulated switch in network namespaces:
//
//	host[i] netns: uplink "up0" (10.99.0.1+i/24) ==veth== "sw<i>" in the switch netns, on bridge "swbr"
//
// The switch is a plain bridge, so it forwards 802.1Q frames as they are,
// like a trunk port of a physical switch.
type lab struct {
	sw    ns.NetNS
	hosts []ns.NetNS
}

// Namespace work must stay on one OS thread.
func init() { runtime.LockOSThread() }

func newNS(t testing.TB) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = testutils.UnmountNS(n)
	})
	return n
}

func newLab(t testing.TB) *lab {
	t.Helper()
	l := &lab{sw: newNS(t)}
	inNS(t, l.sw, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "swbr"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		return netlink.LinkSetUp(br)
	})
	for i := range 2 {
		h := newNS(t)
		l.hosts = append(l.hosts, h)
		port := fmt.Sprintf("sw%d", i)
		inNS(t, l.sw, func() error {
			la := netlink.NewLinkAttrs()
			la.Name = port
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "up0"}); err != nil {
				return err
			}
			up, err := netlink.LinkByName("up0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetNsFd(up, int(h.Fd())); err != nil {
				return err
			}
			br, _ := netlink.LinkByName("swbr")
			p, _ := netlink.LinkByName(port)
			if err := netlink.LinkSetMaster(p, br); err != nil {
				return err
			}
			return netlink.LinkSetUp(p)
		})
		inNS(t, h, func() error {
			lo, _ := netlink.LinkByName("lo")
			_ = netlink.LinkSetUp(lo)
			up, err := netlink.LinkByName("up0")
			if err != nil {
				return err
			}
			addr, _ := netlink.ParseAddr(fmt.Sprintf("10.99.0.%d/24", i+1))
			if err := netlink.AddrAdd(up, addr); err != nil {
				return err
			}
			return netlink.LinkSetUp(up)
		})
	}
	return l
}

// inNS runs f in n and fails the test on error.
func inNS(t testing.TB, n ns.NetNS, f func() error) {
	t.Helper()
	if err := n.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatalf("in netns %s: %v", n.Path(), err)
	}
}

// addBarePod makes a netns with eth0 (ip/24) on bridge br of host h, without the plugin.
func addBarePod(t testing.TB, h ns.NetNS, br, ip string) ns.NetNS {
	t.Helper()
	pod := newNS(t)
	hostIf := fmt.Sprintf("pv%d", net.ParseIP(ip).To4()[3])
	inNS(t, h, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = hostIf
		veth := &netlink.Veth{
			LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(pod.Fd())),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, _ := netlink.LinkByName(hostIf)
		b, err := netlink.LinkByName(br)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(l, b); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	inNS(t, pod, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr(ip + "/24")
		if err := netlink.AddrAdd(l, addr); err != nil {
			return err
		}
		lo, _ := netlink.LinkByName("lo")
		_ = netlink.LinkSetUp(lo)
		return netlink.LinkSetUp(l)
	})
	return pod
}

// canPing reports whether src reaches ip (2 tries, 1 s timeout).
func canPing(t testing.TB, src ns.NetNS, ip string) bool {
	t.Helper()
	var ok bool
	_ = src.Do(func(ns.NetNS) error {
		out, err := exec.Command(busybox(t), "ping", "-c", "2", "-W", "1", "-q", ip).
			CombinedOutput()
		ok = err == nil
		t.Logf("ping %s from %s: %v\n%s", ip, src.Path(), err, out)
		return nil
	})
	return ok
}

// busybox returns the busybox binary used for ping (Debian's busybox-static).
func busybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	t.Fatalf("busybox not found: apt-get install busybox-static (make deps)")
	return ""
}

// testAutoDatapath checks what "auto" (the default) picks on this kernel: kernel when the
// kernel now has 802.1Q (/proc/net/vlan is the 8021q module's, made when it loads: the probe
// loads it if it can), tc-bpf otherwise; and that the probe left no interface behind.
func testAutoDatapath(t *testing.T, want string) {
	t.Helper()
	got, err := ResolveDatapath("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/net/vlan/config"); want == "" {
		want = DatapathTCBPF
		if err == nil {
			want = DatapathKernel
		}
	}
	if got != want {
		t.Fatalf("the default datapath on this kernel is %q, want %q", got, want)
	}
	if l, err := netlinksafe.LinkByName(vlanProbeName); err == nil {
		t.Fatalf("the probe left %s behind: %+v", vlanProbeName, l.Attrs())
	}
	t.Logf("default datapath here: %s", got)
}

// testDatapathIsolation builds VLANs 100 and 200 with a datapath
// on two simulated hosts. Both VLANs use the same /24, so only the 802.1Q
// tags keep them apart.
func testDatapathIsolation(t *testing.T, datapath string) {
	l := newLab(t)
	dp, err := NewDatapath(datapath)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]ns.NetNS{}
	for i, h := range l.hosts {
		for _, vid := range []int{100, 200} {
			spec := Spec{Uplink: "up0", VLAN: vid, Bridge: fmt.Sprintf("berth%d", vid)}
			inNS(t, h, func() error { _, _, err := dp.Ensure(spec); return err })
			inNS(t, h, func() error { _, _, err := dp.Ensure(spec); return err }) // idempotent
			inNS(t, h, func() error { return dp.Check(spec) })
			ip := fmt.Sprintf("10.100.0.%d", vid/10+i) // VLAN 100: .10 .11, VLAN 200: .20 .21
			pods[fmt.Sprintf("%d/%d", vid, i)] = addBarePod(t, h, spec.Bridge, ip)
		}
	}
	if !canPing(t, pods["100/0"], "10.100.0.11") {
		t.Errorf("VLAN 100 pod on host 0 cannot reach its VLAN-mate on host 1")
	}
	if !canPing(t, pods["200/0"], "10.100.0.21") {
		t.Errorf("VLAN 200 pod on host 0 cannot reach its VLAN-mate on host 1")
	}
	if canPing(t, pods["100/0"], "10.100.0.21") {
		t.Errorf(
			"VLAN 100 pod reached a VLAN 200 pod on another host (same subnet): tenants are not isolated",
		)
	}
	if canPing(t, pods["200/1"], "10.100.0.10") {
		t.Errorf("VLAN 200 pod reached a VLAN 100 pod on another host: tenants are not isolated")
	}
	if !canPing(t, l.hosts[0], "10.99.0.2") {
		t.Errorf("untagged host traffic over the uplink broke")
	}
}

// readyWriter collects a process's output and closes ready once the output holds the line
// the process prints when it is ready (tcpdump: "listening on" once its socket is attached).
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	match string
	once  sync.Once
	ready chan struct{}
}

func newReadyWriter(match string) *readyWriter {
	return &readyWriter{match: match, ready: make(chan struct{})}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.match) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func (w *readyWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// wait returns once the process said it is ready, and fails the test if it exits first or
// says nothing within timeout.
func (w *readyWriter) wait(t testing.TB, exited <-chan error, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.ready:
	case err := <-exited:
		t.Fatalf("exited (%v) before printing %q:\n%s", err, w.match, w.String())
	case <-time.After(timeout):
		t.Fatalf("no %q within %v:\n%s", w.match, timeout, w.String())
	}
}

// waitListening returns once a TCP socket of netns n listens on port, read from the kernel's
// table of that netns: a server started as a process (iperf3) gives no other reliable signal,
// as its stdout is block-buffered into a pipe and a probe connection would be taken for a
// client.
func waitListening(t testing.TB, n ns.NetNS, port int, timeout time.Duration) {
	t.Helper()
	want := fmt.Sprintf(":%04X ", port)
	deadline := time.Now().Add(timeout)
	for {
		var listening bool
		inNS(t, n, func() error {
			for _, f := range []string{"tcp", "tcp6"} {
				// thread-self: the table of the netns this locked thread is in.
				b, err := os.ReadFile("/proc/thread-self/net/" + f)
				if err != nil {
					return err
				}
				for _, l := range strings.Split(string(b), "\n")[1:] {
					// sl local_address rem_address st ...: st 0A is LISTEN.
					fs := strings.Fields(l)
					if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "0A" {
						listening = true
					}
				}
			}
			return nil
		})
		if listening {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on TCP port %d in %s after %v", port, n.Path(), timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling the kernel's table: no event to wait on
	}
}
