//go:build integration

package cni

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestAutoDatapath: the default datapath is the one this kernel supports (tc-bpf on CI's,
// which has no 802.1Q), and works end to end.
func TestAutoDatapath(t *testing.T) {
	testAutoDatapath(t, "")
	testDatapathIsolation(t, DatapathAuto)
}

// TestTCBPFDatapathIsolation: see testDatapathIsolation.
func TestTCBPFDatapathIsolation(t *testing.T) { testDatapathIsolation(t, DatapathTCBPF) }

// TestTCBPFFramesAreTagged captures on the simulated switch (tcpdump, which
// reads the VLAN tag the kernel keeps beside the frame) while a VLAN 100 pod
// pings across hosts: the wire carries real 802.1Q frames with VLAN id 100.
func TestTCBPFFramesAreTagged(t *testing.T) {
	tcpdump := lookPath(t, "tcpdump", "apt-get install tcpdump")
	l := newLab(t)
	var pods []ns.NetNS
	for i, h := range l.hosts {
		spec := Spec{Uplink: "up0", VLAN: 100, Bridge: "berth100"}
		inNS(t, h, func() error { _, _, err := (tcBPFDatapath{}).Ensure(spec); return err })
		pods = append(pods, addBarePod(t, h, spec.Bridge, fmt.Sprintf("10.100.0.%d", 10+i)))
	}
	out := newReadyWriter("listening on sw0")
	capture := exec.Command(tcpdump, "-i", "sw0", "-e", "-n", "-l", "-c", "2", "vlan 100 and icmp")
	capture.Stdout, capture.Stderr = out, out
	inNS(t, l.sw, capture.Start)
	done := make(chan error, 1)
	go func() { done <- capture.Wait() }()
	out.wait(t, done, 10*time.Second) // tcpdump prints it once its socket is attached
	canPing(t, pods[0], "10.100.0.11")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = capture.Process.Kill()
		<-done
	}
	if !strings.Contains(out.String(), "vlan 100") || !strings.Contains(out.String(), "802.1Q") {
		t.Fatalf("no 802.1Q VLAN 100 frames seen on the switch port:\n%s", out.String())
	}
	t.Logf("on the switch:\n%s", out.String())
}
