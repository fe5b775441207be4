//go:build integration

package csi

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/csi/iolayer"
	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// nodePlugin is the csi-sharedfs binary run as the node plugin in a cgroup of its own, the
// way the kubelet runs it in a container.
type nodePlugin struct {
	bin, state, metrics string
	container           *mountcgroup.Cgroup // the "container" cgroup of the plugin
	mountCgroup         string
	cmd                 *exec.Cmd
	conn                *grpc.ClientConn
}

func (p *nodePlugin) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.bin, "--node", "--node-id=node-1",
		"--endpoint=unix://"+filepath.Join(p.state, "csi.sock"), "--state-dir="+p.state,
		"--gluster-server="+gd.Host, "--registration-dir=", "--metrics-address="+p.metrics,
		"--mount-cgroup-root=/sys/fs/cgroup", "--mount-cgroup="+p.mountCgroup, "--v=2")
	logFile, err := os.OpenFile(filepath.Join(p.state, "plugin.log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.container.Adopt(p.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	go func(c *exec.Cmd) { _ = c.Wait() }(p.cmd)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(p.state, "plugin.log"))
			t.Fatalf("node plugin not ready within 30s: %v\n%s", err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p.conn, err = grpc.NewClient("unix://"+filepath.Join(p.state, "csi.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
}

// killContainer kills every process of the plugin's cgroup, as runc does when a container
// that shares the host's PID namespace stops, and waits until the cgroup is empty.
func (p *nodePlugin) killContainer(t *testing.T) {
	t.Helper()
	if p.conn != nil {
		p.conn.Close()
	}
	dirs, err := p.container.Dirs()
	if err != nil {
		t.Fatal(err)
	}
	procs := filepath.Join(dirs[0], "cgroup.procs")
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(procs)
		if err != nil {
			t.Fatal(err)
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of the plugin's cgroup survived SIGKILL", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *nodePlugin) node() csi.NodeClient { return csi.NewNodeClient(p.conn) }

func (p *nodePlugin) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func mustCgroup(t *testing.T, root, name string) *mountcgroup.Cgroup {
	t.Helper()
	cg, err := mountcgroup.New(root, name)
	if err != nil {
		t.Fatal(err)
	}
	return cg
}

// removeCgroups removes the test's cgroups once their processes are gone.
func removeCgroups(t *testing.T, cgs ...*mountcgroup.Cgroup) {
	for _, cg := range cgs {
		dirs, err := cg.Dirs()
		if err != nil {
			continue
		}
		for _, d := range dirs {
			for i := 0; i < 100; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, err := os.Stat(d); err == nil {
				b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				t.Errorf("cgroup %s still holds processes %q", d, strings.Fields(string(b)))
			}
		}
	}
}

// layerPID is the pid of the iolayer process serving target, 0 if none.
func layerPID(target string) int {
	return findProcess(func(args []string) bool { return iolayer.IsLayerArgs(args, target) })
}

// TestMountsSurviveNodePluginRestart: pods' volumes, a plain bind and an IO-limited layer,
// keep working while the node plugin's container is killed and started again, and the new
// plugin adopts them (no remount, the same layer process, counters kept) and unpublishes them.
func TestMountsSurviveNodePluginRestart(t *testing.T) {
	td := startDriver(t) // the controller service creates the volumes
	state, err := os.MkdirTemp(gd.Base, "node-")
	if err != nil {
		t.Fatal(err)
	}
	suffix := strconv.Itoa(os.Getpid())
	p := &nodePlugin{bin: csiSharedfs, state: state, metrics: "127.0.0.1:" +
		strconv.Itoa(testenv.FreePort(t)),
		container:   mustCgroup(t, "/sys/fs/cgroup", "berth-csi-test-plugin-"+suffix),
		mountCgroup: "berth-csi-test-mounts-" + suffix}
	t.Cleanup(func() {
		p.killContainer(t)
		testenv.UnmountGlusterUnder(state) // the clients exit with their mounts
		removeCgroups(t, p.container, mustCgroup(t, "/sys/fs/cgroup", p.mountCgroup))
		_ = os.RemoveAll(state)
	})
	p.start(t)

	ctx := t.Context()
	type vol struct{ id, staging, target string }
	var vols []vol
	for _, v := range []struct {
		name   string
		params map[string]string
	}{{"plain", nil}, {"limited", map[string]string{ParamWriteBytesPerSecond: "50Mi"}}} {
		cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "restart-" + v.name,
			Parameters:         v.params,
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
		if err != nil {
			t.Fatal(err)
		}
		x := vol{id: cv.GetVolume().GetVolumeId(), staging: filepath.Join(state, "staging", v.name),
			target: filepath.Join(state, "pods", v.name, "mount")}
		if err := os.MkdirAll(x.staging, 0o750); err != nil {
			t.Fatal(err)
		}
		if _, err := p.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: x.id,
			StagingTargetPath: x.staging, VolumeCapability: mountCap()}); err != nil {
			t.Fatalf("NodeStageVolume %s: %v", v.name, err)
		}
		if _, err := p.node().NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: x.id,
			StagingTargetPath: x.staging, TargetPath: x.target, VolumeCapability: mountCap()}); err != nil {
			t.Fatalf("NodePublishVolume %s: %v", v.name, err)
		}
		t.Cleanup(func() {
			_, _ = td.controller().DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{
				VolumeId: x.id})
		})
		vols = append(vols, x)
	}
	// A running app: a file it keeps open on each volume, and data it wrote.
	open := map[string]*os.File{}
	for _, v := range vols {
		if err := os.WriteFile(filepath.Join(v.target, "before"), []byte("precious"), 0o644); err != nil {
			t.Fatalf("write to %s: %v", v.target, err)
		}
		f, err := os.OpenFile(filepath.Join(v.target, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		open[v.target] = f
	}
	limitedTarget := vols[1].target
	layerBefore := layerPID(limitedTarget)
	if layerBefore == 0 {
		t.Fatalf("no iolayer process serves %s", limitedTarget)
	}
	written := bytes.Repeat([]byte{'w'}, 4<<20)
	if _, err := open[limitedTarget].Write(written); err != nil {
		t.Fatal(err)
	}

	p.killContainer(t)
	for _, v := range vols {
		b, err := os.ReadFile(filepath.Join(v.target, "before"))
		if err != nil || string(b) != "precious" {
			t.Fatalf("after the plugin's container was killed, %s reads %q, %v; want the data written "+
				"before", v.target, b, err)
		}
		if _, err := open[v.target].WriteString("still here\n"); err != nil {
			t.Fatalf("after the plugin's container was killed, a file held open on %s fails: %v", v.target,
				err)
		}
	}

	p.start(t)
	if got := layerPID(limitedTarget); got != layerBefore {
		t.Errorf("the IO-limited layer of %s is pid %d after the restart, want the adopted pid %d",
			limitedTarget, got, layerBefore)
	}
	if got := p.metric(t, "berth_csi_remounts_total"); got != "" {
		t.Errorf("the restarted plugin remounted: %s", got)
	}
	line := p.metric(t, `berth_csi_volume_io_bytes_total{op="write",volume_id="`+vols[1].id+`"}`)
	if f := strings.Fields(line); len(f) != 2 {
		t.Errorf("no write counter of the limited volume after the restart: %q", line)
	} else if n, err := strconv.ParseFloat(f[1], 64); err != nil || n < float64(len(written)) {
		t.Errorf("write counter after the restart = %s, want at least the %d bytes written before it",
			f[1], len(written))
	}
	for _, v := range vols {
		if _, err := p.node().NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: v.id,
			VolumePath: v.target}); err != nil {
			t.Errorf("NodeGetVolumeStats of %s after the restart: %v", v.target, err)
		}
		open[v.target].Close()
		if _, err := p.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id,
			TargetPath: v.target}); err != nil {
			t.Fatalf("NodeUnpublishVolume %s after the restart: %v", v.target, err)
		}
		if _, err := os.Lstat(v.target); !os.IsNotExist(err) {
			t.Errorf("target %s left behind after unpublish: %v", v.target, err)
		}
		if _, err := p.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id,
			StagingTargetPath: v.staging}); err != nil {
			t.Fatalf("NodeUnstageVolume %s: %v", v.staging, err)
		}
	}
	if pid := layerPID(limitedTarget); pid != 0 {
		t.Errorf("iolayer pid %d still runs after its target was unpublished", pid)
	}
}
