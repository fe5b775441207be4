package csi

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// GlusterCLI runs gluster management commands (quota, status) against glusterd.
type GlusterCLI struct {
	// Args is the command prefix, e.g. ["gluster", "--mode=script",
	// "--glusterd-sock=/run/glusterd.socket"].
	Args []string

	// WriteBehind keeps GlusterFS's write-behind on for volumes with berth quotas. Off (the
	// default), a write(2) past the quota fails itself; on, the client acknowledges up to its
	// 1 MiB window per file before the bricks refuse it, and the refusal comes on a later
	// write or on close (data lost for a program that does not check close); parallel small
	// writers at the quota crashed the GlusterFS 10.3 client twice here with it on.
	WriteBehind bool
	// AuthAllow, when set, is put on every GlusterFS volume berth provisions on as auth.allow
	// (comma-separated client addresses, '*' wildcards): other hosts cannot mount it.
	AuthAllow string

	mu           sync.Mutex
	quotaEnabled map[string]bool
}

// NewGlusterCLI returns a CLI wrapper; socket may be empty for glusterd's default socket,
// remoteHost may be empty for the local glusterd.
func NewGlusterCLI(binary, socket, remoteHost, logFile string) *GlusterCLI {
	args := []string{binary, "--mode=script"}
	if socket != "" {
		args = append(args, "--glusterd-sock="+socket)
	}
	if remoteHost != "" {
		args = append(args, "--remote-host="+remoteHost)
	}
	if logFile != "" {
		args = append(args, "--log-file="+logFile)
	}
	return &GlusterCLI{Args: args, quotaEnabled: map[string]bool{}}
}

func (g *GlusterCLI) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, g.Args[0], append(append([]string{}, g.Args[1:]...), args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return buf.Bytes(), fmt.Errorf("gluster %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(buf.String()))
	}
	return buf.Bytes(), nil
}

// ensureQuota enables directory quotas on vol with hard- and soft-timeout 0: with gluster's
// defaults (cached sizes, 60 s / 5 s) a fresh 10 MB directory takes 60 MB before EDQUOT.
func (g *GlusterCLI) ensureQuota(ctx context.Context, vol string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quotaEnabled[vol] {
		return nil
	}
	if out, err := g.run(ctx, "volume", "quota", vol, "enable"); err != nil &&
		!bytes.Contains(out, []byte("already enabled")) {
		return err
	}
	for _, t := range []string{"hard-timeout", "soft-timeout"} {
		if _, err := g.run(ctx, "volume", "quota", vol, t, "0"); err != nil {
			return err
		}
	}
	// df inside the volume shows the quota, not the whole GlusterFS volume.
	opts := [][2]string{{"features.quota-deem-statfs", "on"}}
	wb := "off"
	if g.WriteBehind {
		wb = "on"
	}
	opts = append(opts, [2]string{"performance.write-behind", wb})
	if g.AuthAllow != "" {
		opts = append(opts, [2]string{"auth.allow", g.AuthAllow})
	}
	for _, o := range opts {
		if _, err := g.run(ctx, "volume", "set", vol, o[0], o[1]); err != nil {
			return err
		}
	}
	g.quotaEnabled[vol] = true
	return nil
}

// setQuota sets (or raises, live) the hard limit of directory path (relative to the volume root).
func (g *GlusterCLI) setQuota(ctx context.Context, vol, path string, bytes int64) error {
	if err := g.ensureQuota(ctx, vol); err != nil {
		return err
	}
	_, err := g.run(ctx, "volume", "quota", vol, "limit-usage", "/"+strings.TrimPrefix(path, "/"),
		strconv.FormatInt(bytes, 10))
	return err
}

// removeQuota drops the limit of path; a path without a limit is not an error.
func (g *GlusterCLI) removeQuota(ctx context.Context, vol, path string) error {
	path = "/" + strings.TrimPrefix(path, "/")
	out, err := g.run(ctx, "volume", "quota", vol, "remove", path)
	if err != nil && (bytes.Contains(out, []byte("No quota")) || bytes.Contains(out, []byte(
		"not present")) ||
		bytes.Contains(out, []byte("No such file"))) {
		return nil
	}
	if err != nil && halfRemovedLimit(out) {
		// glusterd's quota.conf is not resynced when a peer restarts: a limit set in the
		// seconds after it came back is missing from its copy, so removing it later commits
		// on the other peers (limit xattr and their entry gone) and fails on that one, and a
		// plain retry then fails on the missing xattr. Setting the limit again restores it on
		// every peer; removing it then succeeds everywhere.
		if _, serr := g.run(ctx, "volume", "quota", vol, "limit-usage", path, "1"); serr != nil {
			return fmt.Errorf("%w; re-setting the half-removed limit to remove it again: %w", err, serr)
		}
		_, err = g.run(ctx, "volume", "quota", vol, "remove", path)
	}
	return err
}

// halfRemovedLimit reports whether `quota remove` committed on some peers only ("Commit failed
// on PEER"), or failed because an earlier one did: the directory no longer carries its limit
// although glusterd still lists it.
func halfRemovedLimit(out []byte) bool {
	return bytes.Contains(out, []byte("Commit failed on")) ||
		bytes.Contains(out, []byte("removexattr failed")) && bytes.Contains(out, []byte("No data available"))
}

// BrickStatus is one brick of a GlusterFS volume as glusterd, or one client, sees it.
type BrickStatus struct {
	Host   string
	Path   string
	Online bool
	PID    int // 0 when read from a client
}

// Name is the brick's host:path, as GlusterFS names it.
func (b BrickStatus) Name() string { return b.Host + ":" + b.Path }

// DaemonStatus is one node's self-heal or quota daemon as glusterd reports it.
type DaemonStatus struct {
	Name   string // as glusterd names it: "Self-heal Daemon", "Quota Daemon"
	Host   string // the peer it runs on, as its bricks name it ("localhost": a node without bricks)
	Online bool
}

// String is the daemon as `gluster volume status` prints it: "Quota Daemon on 10.0.0.2".
func (d DaemonStatus) String() string { return d.Name + " on " + d.Host }

// VolumeStatus is what `gluster volume status VOL --xml` reports.
type VolumeStatus struct {
	Name   string
	Bricks []BrickStatus
	// Daemons are the self-heal and quota daemons of the peers glusterd is connected to.
	Daemons []DaemonStatus
}

// servingDaemons are the daemons berth's volumes rely on: without the self-heal daemon
// replicas stop converging, without quotad a brick's quota enforcer fails its calls.
var servingDaemons = []string{"Self-heal Daemon", "Quota Daemon"}

// DaemonsDown lists the serving daemons glusterd reports not running.
func (v VolumeStatus) DaemonsDown() []DaemonStatus {
	var down []DaemonStatus
	for _, d := range v.Daemons {
		if !d.Online {
			down = append(down, d)
		}
	}
	return down
}

// Offline lists the names of the bricks that are not online.
func (v VolumeStatus) Offline() []string {
	var offline []string
	for _, b := range v.Bricks {
		if !b.Online {
			offline = append(offline, b.Name())
		}
	}
	return offline
}

// Healthy reports whether the volume has bricks and every one is online.
func (v VolumeStatus) Healthy() bool { return len(v.Bricks) > 0 && len(v.Offline()) == 0 }

type statusXML struct {
	OpRet  int    `xml:"opRet"`
	OpErr  string `xml:"opErrstr"`
	Volume []struct {
		Name  string `xml:"volName"`
		Nodes []struct {
			Host   string `xml:"hostname"`
			Path   string `xml:"path"`
			PeerID string `xml:"peerid"`
			Status int    `xml:"status"`
			PID    int    `xml:"pid"`
		} `xml:"node"`
	} `xml:"volStatus>volumes>volume"`
}

type infoXML struct {
	OpRet  int      `xml:"opRet"`
	OpErr  string   `xml:"opErrstr"`
	Bricks []string `xml:"volInfo>volumes>volume>bricks>brick>name"`
}

// volumeStatus reads the status of every brick of vol, in the volume's brick order.
// `volume status` lists only the bricks and daemons of peers
// glusterd is connected to: a brick whose node is down (powered off, cut off) is missing from
// it, not shown offline, so the brick list comes from `volume info`.
func (g *GlusterCLI) volumeStatus(ctx context.Context, vol string) (VolumeStatus, error) {
	out, err := g.run(ctx, "volume", "info", vol, "--xml")
	if err != nil {
		return VolumeStatus{}, err
	}
	var info infoXML
	if err := xml.Unmarshal(out, &info); err != nil {
		return VolumeStatus{}, fmt.Errorf("failed to parse info of GlusterFS volume %q: %w", vol, err)
	}
	if info.OpRet != 0 {
		return VolumeStatus{}, fmt.Errorf("gluster volume info %s: %s", vol, info.OpErr)
	}
	if out, err = g.run(ctx, "volume", "status", vol, "--xml"); err != nil {
		return VolumeStatus{}, err
	}
	var s statusXML
	if err := xml.Unmarshal(out, &s); err != nil {
		return VolumeStatus{}, fmt.Errorf("failed to parse status of GlusterFS volume %q: %w", vol, err)
	}
	if s.OpRet != 0 {
		return VolumeStatus{}, fmt.Errorf("gluster volume status %s: %s", vol, s.OpErr)
	}
	return mergeBrickStatus(vol, info.Bricks, s), nil
}

// mergeBrickStatus lists every brick of the volume (names host:path, from volume info) with
// its status; a brick volume status does not mention is offline.
func mergeBrickStatus(vol string, bricks []string, s statusXML) VolumeStatus {
	seen := map[string]BrickStatus{}
	peerHost := map[string]string{} // peer UUID -> the host its bricks are named by
	var daemons []DaemonStatus
	var daemonPeers []string
	for _, v := range s.Volume {
		for _, n := range v.Nodes {
			if !strings.HasPrefix(n.Path, "/") { // daemons: hostname is the name, path the peer
				if slices.Contains(servingDaemons, n.Host) {
					daemons = append(daemons, DaemonStatus{Name: n.Host, Host: n.Path,
						Online: n.Status == 1})
					daemonPeers = append(daemonPeers, n.PeerID)
				}
				continue
			}
			b := BrickStatus{Host: n.Host, Path: n.Path, Online: n.Status == 1, PID: n.PID}
			seen[b.Name()] = b
			if n.PeerID != "" {
				peerHost[n.PeerID] = n.Host
			}
		}
	}
	// glusterd names its own node's daemons "localhost": name them as that node's bricks are,
	// so an Event says which node, whichever node the controller asked.
	for i, d := range daemons {
		if h, ok := peerHost[daemonPeers[i]]; ok && d.Host == "localhost" {
			daemons[i].Host = h
		}
	}
	vs := VolumeStatus{Name: vol, Daemons: daemons}
	for _, name := range bricks {
		if b, ok := seen[name]; ok {
			vs.Bricks = append(vs.Bricks, b)
			delete(seen, name)
			continue
		}
		host, path, _ := strings.Cut(name, ":")
		vs.Bricks = append(vs.Bricks, BrickStatus{Host: host, Path: path})
	}
	for _, name := range slices.Sorted(maps.Keys(seen)) { // named differently by info and status
		vs.Bricks = append(vs.Bricks, seen[name])
	}
	return vs
}

// volumeExists reports whether glusterd knows volume vol, and whether it was archived.
func (g *GlusterCLI) volumeExists(ctx context.Context, vol string) (
	exists, archived bool, err error) {
	vi, err := g.volumeInfo(ctx, vol)
	return vi.Exists, vi.Archived, err
}

// volumeInfo is what `gluster volume info VOL` says about a volume berth made.
type volumeInfo struct {
	Exists, Archived bool
	// NeverStarted: status "Created", no client ever used the volume, so it holds no data.
	NeverStarted bool
	// Redundant: replicated or dispersed (Type: Replicate, Distributed-Replicate, Disperse…).
	Redundant bool
	// HealRemedy is when the health loop turned cluster.use-anonymous-inode off for a stuck
	// heal (option user.berth.heal-remedy); zero when it did not.
	HealRemedy time.Time
}

func (g *GlusterCLI) volumeInfo(ctx context.Context, vol string) (volumeInfo, error) {
	out, err := g.run(ctx, "volume", "info", vol)
	if err != nil {
		if bytes.Contains(out, []byte("does not exist")) {
			return volumeInfo{}, nil
		}
		return volumeInfo{}, err
	}
	return volumeInfo{Exists: true, Archived: bytes.Contains(out, []byte("user.berth.archived:")),
		NeverStarted: bytes.Contains(out, []byte("\nStatus: Created")),
		Redundant: bytes.Contains(out, []byte("Replicate\n")) ||
			bytes.Contains(out, []byte("Disperse\n")),
		HealRemedy: healRemedyOf(out)}, nil
}

// healRemedyOf reads option user.berth.heal-remedy from `gluster volume info` output: a time
// while the remedy is on, "none" after it (glusterd cannot reset user options). Another value
// (edited by hand) counts as long ago, so the remedy is ended.
func healRemedyOf(info []byte) time.Time {
	for _, line := range strings.Split(string(info), "\n") {
		v, ok := strings.CutPrefix(line, optionHealRemedy+": ")
		if !ok || strings.TrimSpace(v) == healRemedyNone {
			continue
		}
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
		if err != nil {
			return time.Unix(1, 0)
		}
		return t
	}
	return time.Time{}
}

// anonymousInodeOn reports whether cluster.use-anonymous-inode is on for vol.
func (g *GlusterCLI) anonymousInodeOn(ctx context.Context, vol string) (bool, error) {
	out, err := g.run(ctx, "volume", "get", vol, optionAnonymousInode)
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == optionAnonymousInode {
			switch strings.ToLower(f[1]) {
			case "on", "yes", "true", "enable", "1":
				return true, nil
			case "off", "no", "false", "disable", "0":
				return false, nil
			}
			return false, fmt.Errorf("unexpected value %q of %s", f[1], optionAnonymousInode)
		}
	}
	return false, fmt.Errorf("gluster volume get %s %s: option not in the output: %s", vol,
		optionAnonymousInode, strings.TrimSpace(string(out)))
}

// beginHealRemedy records the remedy's start in the volume's options, then turns
// cluster.use-anonymous-inode off: a controller that dies in between leaves the record, and
// the next one turns the option (back) on.
func (g *GlusterCLI) beginHealRemedy(ctx context.Context, vol string, at time.Time) error {
	if _, err := g.run(ctx, "volume", "set", vol, optionHealRemedy,
		at.UTC().Format(time.RFC3339)); err != nil {
		return err
	}
	_, err := g.run(ctx, "volume", "set", vol, optionAnonymousInode, "off")
	return err
}

// endHealRemedy turns cluster.use-anonymous-inode on again and clears the record.
func (g *GlusterCLI) endHealRemedy(ctx context.Context, vol string) error {
	if _, err := g.run(ctx, "volume", "set", vol, optionAnonymousInode, "on"); err != nil {
		return err
	}
	_, err := g.run(ctx, "volume", "set", vol, optionHealRemedy, healRemedyNone)
	return err
}

// createVolume creates (if missing) and starts vol with the given bricks and records the PV
// it belongs to as the volume option user.berth.pv. Repeating it is harmless.
func (g *GlusterCLI) createVolume(ctx context.Context, vol, pv string, replica int, bricks []string,
	force bool) error {
	exists, _, err := g.volumeExists(ctx, vol)
	if err != nil {
		return err
	}
	if !exists {
		args := []string{"volume", "create", vol}
		if replica > 1 {
			args = append(args, "replica", strconv.Itoa(replica))
		}
		args = append(args, bricks...)
		if force {
			args = append(args, "force")
		}
		if _, err := g.run(ctx, args...); err != nil {
			return err
		}
	}
	if _, err := g.run(ctx, "volume", "set", vol, "user.berth.pv", pv); err != nil {
		return err
	}
	if g.AuthAllow != "" { // before the start: no client outside the list ever mounts it
		if _, err := g.run(ctx, "volume", "set", vol, "auth.allow", g.AuthAllow); err != nil {
			return err
		}
	}
	if out, err := g.run(ctx, "volume", "start", vol); err != nil &&
		!bytes.Contains(out, []byte("already started")) {
		return err
	}
	return nil
}

// archiveVolume stops vol and records when it was archived (user.berth.archived); glusterd
// cannot rename volumes, so the stopped volume keeps its name and data.
func (g *GlusterCLI) archiveVolume(ctx context.Context, vol string, at time.Time) error {
	if _, err := g.run(ctx, "volume", "set", vol, "user.berth.archived",
		at.UTC().Format(time.RFC3339)); err != nil {
		return err
	}
	return g.stopVolume(ctx, vol)
}

func (g *GlusterCLI) stopVolume(ctx context.Context, vol string) error {
	if out, err := g.run(ctx, "volume", "stop", vol); err != nil &&
		!bytes.Contains(out, []byte("not in the started state")) {
		return err
	}
	return nil
}

// deleteVolume stops and deletes vol; an unknown volume is not an error. Brick directories
// stay on the brick hosts (glusterd does not remove them).
func (g *GlusterCLI) deleteVolume(ctx context.Context, vol string) error {
	exists, _, err := g.volumeExists(ctx, vol)
	if err != nil || !exists {
		return err
	}
	if err := g.stopVolume(ctx, vol); err != nil {
		return err
	}
	g.mu.Lock()
	delete(g.quotaEnabled, vol)
	g.mu.Unlock()
	_, err = g.run(ctx, "volume", "delete", vol)
	return err
}

// HealInfo is what glusterd knows of a replicated volume's files that need healing, summed
// over its bricks.
type HealInfo struct {
	Replicated bool // false: no self-heal (plain distribute, or the self-heal daemon disabled)
	Pending    int  // entries waiting for heal (split-brain ones included)
	// SplitBrain entries need a person; -1 when unknown (see healInfo).
	SplitBrain int
}

// Clean reports whether heal info is empty (and known to be).
func (h HealInfo) Clean() bool { return h.Pending == 0 && h.SplitBrain <= 0 }

type healSummaryXML struct {
	OpRet  int    `xml:"opRet"`
	OpErr  string `xml:"opErrstr"`
	Bricks []struct {
		Name       string `xml:"name"`
		Total      string `xml:"totalNumberOfEntries"`
		SplitBrain string `xml:"numberOfEntriesInSplitBrain"`
	} `xml:"healInfo>bricks>brick"`
}

// healInfo asks `volume heal VOL info summary --xml` (glfsheal: pending and split-brain
// counts). glfsheal reaches glusterd only on its default socket, /var/run/glusterd.socket; where
// it cannot, the self-heal daemon's `statistics heal-count` gives the pending count alone.
func (g *GlusterCLI) healInfo(ctx context.Context, vol string) (HealInfo, error) {
	out, err := g.run(ctx, "volume", "heal", vol, "info", "summary", "--xml")
	if err == nil {
		if h, perr := parseHealSummary(out); perr == nil {
			return h, nil
		}
	}
	out, err = g.run(ctx, "volume", "heal", vol, "statistics", "heal-count")
	if err != nil {
		if bytes.Contains(out, []byte("not of type")) {
			return HealInfo{}, nil
		}
		// The same answer for a plain volume and a replicated one whose daemon is off; only
		// the first has nothing to heal.
		if vi, ierr := g.volumeInfo(ctx, vol); ierr == nil && !vi.Redundant {
			return HealInfo{}, nil
		}
		return HealInfo{}, err
	}
	return parseHealCount(out), nil
}

// parseHealSummary sums the per-brick counts of `heal VOL info summary --xml`.
func parseHealSummary(out []byte) (HealInfo, error) {
	var s healSummaryXML
	if err := xml.Unmarshal(out, &s); err != nil {
		return HealInfo{}, fmt.Errorf("failed to parse heal info summary: %w", err)
	}
	if s.OpRet != 0 {
		return HealInfo{}, fmt.Errorf("heal info summary: %s", s.OpErr)
	}
	h := HealInfo{Replicated: true}
	for _, b := range s.Bricks {
		n, _ := strconv.Atoi(b.Total) // "-" for a brick that is down
		sb, _ := strconv.Atoi(b.SplitBrain)
		h.Pending += n
		h.SplitBrain += sb
	}
	return h, nil
}

// parseHealCount sums the "Number of entries: N" lines of `statistics heal-count`.
func parseHealCount(out []byte) HealInfo {
	h := HealInfo{Replicated: true, SplitBrain: -1}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Number of entries:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			h.Pending += n
		}
	}
	return h
}

// startForce runs `gluster volume start VOL force`: glusterd starts the bricks and daemons of
// the volume that are not running on any connected peer. It also restarts the quota daemon of
// every peer (glusterd's quotad manager stops and starts it), so it is not for routine polls.
func (g *GlusterCLI) startForce(ctx context.Context, vol string) error {
	_, err := g.run(ctx, "volume", "start", vol, "force")
	return err
}

// heal starts an index heal of vol: the self-heal daemon heals the pending entries now
// instead of at its next crawl (cluster.heal-timeout, 600 s by default).
func (g *GlusterCLI) heal(ctx context.Context, vol string) error {
	_, err := g.run(ctx, "volume", "heal", vol)
	return err
}
