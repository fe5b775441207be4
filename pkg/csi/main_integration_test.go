//go:build integration

// Integration tests of the CSI driver against a real glusterd (Debian glusterfs-server,
// glusterfs-client; run as root with /dev/fuse). Only one glusterd can run per machine, so
// TestMain owns it for the whole package and stops it and every brick after.
package csi

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

const (
	plainVol      = "berthgv" // 1 brick
	replicatedVol = "berthdr" // 2x2 distributed-replicated
)

var gd *testenv.Glusterd

// replicatedBricks are the brick directories of replicatedVol, in the volume's brick order.
var replicatedBricks []string

// csiSharedfs is the csi-sharedfs binary built for this run: the driver under test starts
// its IO-limited layers as `csi-sharedfs iolayer`, and TestMountsSurviveNodePluginRestart runs
// it as the node plugin.
var csiSharedfs string

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	bin, err := os.MkdirTemp("", "berth-csi-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(bin)
	csiSharedfs = filepath.Join(bin, "csi-sharedfs")
	build := exec.Command("go", "build", "-o", csiSharedfs, testenv.RepoRoot()+"/cmd/csi-sharedfs")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/csi-sharedfs: %v\n%s", err, out)
		return 1
	}
	gd, err = testenv.StartGlusterd("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to start glusterd:", err)
		return 1
	}
	defer func() {
		if err := gd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop glusterd:", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := gd.CreateVolume(ctx, plainVol, 1, 1); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if replicatedBricks, err = gd.CreateVolume(ctx, replicatedVol, 2, 4); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// testDriver runs controller and node services of one driver on a unix socket.
type testDriver struct {
	d        *Driver
	endpoint string
	conn     *grpc.ClientConn
	state    string
}

func startDriver(t testing.TB) *testDriver {
	t.Helper()
	state, err := os.MkdirTemp(gd.Base, "driver-")
	if err != nil {
		t.Fatal(err)
	}
	a := gd.CLIArgs()
	cli := NewGlusterCLI(a[0], gd.Socket, "", filepath.Join(state, "cli.log"))
	d, err := NewDriver(Options{
		NodeID: "node-1", Endpoint: filepath.Join(state, "csi.sock"), StateDir: state,
		GlusterServer: gd.Host, DefaultGlusterVolume: plainVol, GlusterCLI: cli,
		Controller: true, Node: true, LayerBinary: csiSharedfs,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	td := &testDriver{d: d, endpoint: filepath.Join(state, "csi.sock"), state: state}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver stopped with %v", err)
		}
		if td.conn != nil {
			td.conn.Close()
		}
		testenv.UnmountGlusterUnder(state)
		_ = os.RemoveAll(state) // after unmounting
	})
	for i := 0; i < 100 && d.Ready(ctx) != nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	td.conn, err = grpc.NewClient("unix://"+td.endpoint, grpc.WithTransportCredentials(
		insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return td
}

func (td *testDriver) controller() csi.ControllerClient { return csi.NewControllerClient(td.conn) }
func (td *testDriver) node() csi.NodeClient             { return csi.NewNodeClient(td.conn) }

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{
			Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
}

// publishNew creates a volume and stages and publishes it; it returns the target path.
func (td *testDriver) publishNew(t testing.TB, name string, capacity int64,
	params map[string]string) (string, string) {
	t.Helper()
	ctx := t.Context()
	cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name,
		Parameters:         params,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: capacity},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := cv.GetVolume().GetVolumeId()
	staging := filepath.Join(td.state, "staging", name)
	target := filepath.Join(td.state, "pods", name, "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := td.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id,
		StagingTargetPath: staging, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	if _, err := td.node().NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id,
		StagingTargetPath: staging, TargetPath: target, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	t.Cleanup(func() {
		bg := context.Background()
		_, _ = td.node().NodeUnpublishVolume(bg, &csi.NodeUnpublishVolumeRequest{VolumeId: id,
			TargetPath: target})
		_, _ = td.node().NodeUnstageVolume(bg, &csi.NodeUnstageVolumeRequest{VolumeId: id,
			StagingTargetPath: staging})
		_, _ = td.controller().DeleteVolume(bg, &csi.DeleteVolumeRequest{VolumeId: id})
	})
	return id, target
}

// volumeIOBytes reads berth_csi_volume_io_bytes_total{volume_id=id,op=op} as a scrape would.
func volumeIOBytes(t testing.TB, d *Driver, id, op string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.metrics.io)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "berth_csi_volume_io_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["volume_id"] == id && labels["op"] == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// findProcess returns the pid of the first process whose arguments match, 0 if none.
func findProcess(match func(args []string) bool) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if args := mountcgroup.Cmdline(pid); len(args) > 0 && match(args) {
			return pid
		}
	}
	return 0
}
