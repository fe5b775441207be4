package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// Volume ID elements, joined by "#". Append only; the parser validates every segment.
//
//	v1#gv0#3f#pvc-2d7c6a4e-0d6b-4bd4-9b1e-6f1b7b2f6a10
const (
	idVersion = iota
	idGlusterVolume
	idShard
	idName
	totalIDElements // Always last
)

const (
	idPrefix   = "v1"
	volumesDir = "berth-volumes" // root of every PV directory on a GlusterFS volume
	archiveDir = "berth-archive" // where archived (deleted, onDelete=archive) PVs go
	dataDir    = "data"          // what the pod sees; meta.json lives beside it, out of reach
	metaFile   = "meta.json"
)

var (
	glusterVolRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	nameRe       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	shardRe      = regexp.MustCompile(`^[0-9a-f]{2}$`)
	errBadID     = errors.New("malformed volume ID")
)

// volumeRef points at one PV directory: <mount of GlusterVolume>/berth-volumes/<Shard>/<Name>.
type volumeRef struct {
	GlusterVolume string
	Shard         string
	Name          string
}

// newVolumeRef hashes name into one of 256 shard directories so no directory grows huge.
func newVolumeRef(glusterVol, name string) (volumeRef, error) {
	if !glusterVolRe.MatchString(glusterVol) {
		return volumeRef{}, fmt.Errorf(
			"invalid GlusterFS volume name %q: want letters, digits, '_' or '-'", glusterVol)
	}
	if !nameRe.MatchString(name) {
		return volumeRef{}, fmt.Errorf(
			"invalid volume name %q: want 1-128 letters, digits, '.', '_', '+' or '-', starting with a "+
				"letter or digit", name)
	}
	sum := sha256.Sum256([]byte(name))
	return volumeRef{GlusterVolume: glusterVol, Shard: hex.EncodeToString(sum[:1]), Name: name}, nil
}

// ID encodes the reference as a volume ID.
func (v volumeRef) ID() string {
	e := make([]string, totalIDElements)
	e[idVersion], e[idGlusterVolume], e[idShard], e[idName] = idPrefix, v.GlusterVolume, v.Shard,
		v.Name
	return strings.Join(e, "#")
}

// parseVolumeID validates every segment, so an ID can never point outside berth-volumes.
func parseVolumeID(id string) (volumeRef, error) {
	e := strings.Split(id, "#")
	if len(e) != totalIDElements || e[idVersion] != idPrefix {
		return volumeRef{}, fmt.Errorf("%w %q: want v1#<gluster volume>#<shard>#<name>", errBadID, id)
	}
	v, err := newVolumeRef(e[idGlusterVolume], e[idName])
	if err != nil {
		return volumeRef{}, fmt.Errorf("%w %q: %w", errBadID, id, err)
	}
	if !shardRe.MatchString(e[idShard]) || e[idShard] != v.Shard {
		return volumeRef{}, fmt.Errorf("%w %q: shard %q does not match the name",
			errBadID, id, e[idShard])
	}
	return v, nil
}

// dedicatedVolumePrefix names the GlusterFS volumes made for one PV each (isolation: dedicated).
const dedicatedVolumePrefix = "berth-"

var dedicatedVolRe = regexp.MustCompile(`^berth-[0-9a-f]{16}$`)

// dedicatedVolumeName is the GlusterFS volume of PV name under isolation: dedicated.
func dedicatedVolumeName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return dedicatedVolumePrefix + hex.EncodeToString(sum[:8])
}

// Dedicated reports whether the GlusterFS volume was made for this PV alone: the ID then
// names berth-<hash of the name>, a name a shared StorageClass may not use.
func (v volumeRef) Dedicated() bool { return v.GlusterVolume == dedicatedVolumeName(v.Name) }

// RelDir is the PV directory relative to the GlusterFS volume root.
func (v volumeRef) RelDir() string { return filepath.Join(volumesDir, v.Shard, v.Name) }

// RelData is the directory the pod sees, relative to the GlusterFS volume root; the quota is
// set on it.
func (v volumeRef) RelData() string { return filepath.Join(v.RelDir(), dataDir) }

// volumeMeta is stored in meta.json beside the data directory: the tenant cannot reach it.
type volumeMeta struct {
	Name          string         `json:"name"`
	CapacityBytes int64          `json:"capacityBytes"`
	OnDelete      string         `json:"onDelete"`
	Limits        iolayer.Limits `json:"limits"`
	Statistics    bool           `json:"statistics,omitempty"`
}

func readMeta(dir string) (*volumeMeta, error) {
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, err
	}
	m := &volumeMeta{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", filepath.Join(dir, metaFile), err)
	}
	return m, nil
}

func writeMeta(dir string, m *volumeMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, metaFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	return os.Rename(tmp, filepath.Join(dir, metaFile))
}

// StorageClass parameters (case-insensitive) and the volume context keys they become.
const (
	ParamGlusterVolume       = "glusterVolume"
	ParamOnDelete            = "onDelete"
	ParamReadBytesPerSecond  = "readBytesPerSecond"
	ParamWriteBytesPerSecond = "writeBytesPerSecond"
	ParamReadIOPS            = "readIOPS"
	ParamWriteIOPS           = "writeIOPS"
	ParamIOStatistics        = "ioStatistics"
	ParamIsolation           = "isolation"
	ParamBrickHosts          = "brickHosts"
	ParamBrickRoot           = "brickRoot"
	ParamReplica             = "replica"
	ParamBrickForce          = "brickForce"
	IsolationShared          = "shared"
	IsolationDedicated       = "dedicated"
	OnDeleteDelete           = "delete"
	OnDeleteArchive          = "archive"
)

// volumeParams is the validated form of CreateVolume parameters.
type volumeParams struct {
	GlusterVolume string
	Dedicated     *dedicatedSpec // isolation: dedicated; GlusterVolume is then ""
	OnDelete      string
	Limits        iolayer.Limits
	Statistics    bool
}

// parseParams validates StorageClass parameters; unknown keys are refused. Keys the
// external provisioner adds (csi.storage.k8s.io/*) are ignored.
func parseParams(params map[string]string, defaultVol string) (volumeParams, error) {
	p := volumeParams{GlusterVolume: defaultVol, OnDelete: OnDeleteDelete}
	isolation, explicitVol := IsolationShared, false
	ds := &dedicatedSpec{Replica: 1}
	var brickKeys []string
	for k, v := range params {
		var err error
		switch strings.ToLower(k) {
		case strings.ToLower(ParamGlusterVolume):
			p.GlusterVolume, explicitVol = v, true
		case strings.ToLower(ParamIsolation):
			if v != IsolationShared && v != IsolationDedicated {
				err = fmt.Errorf(
					"want %q (a directory on a shared GlusterFS volume) or %q (a GlusterFS volume per PV)",
					IsolationShared, IsolationDedicated)
			}
			isolation = v
		case strings.ToLower(ParamBrickHosts), strings.ToLower(ParamBrickRoot),
			strings.ToLower(ParamReplica), strings.ToLower(ParamBrickForce):
			brickKeys = append(brickKeys, k)
			err = ds.set(strings.ToLower(k), v)
		case strings.ToLower(ParamOnDelete):
			if v != OnDeleteDelete && v != OnDeleteArchive {
				err = fmt.Errorf("want %q or %q", OnDeleteDelete, OnDeleteArchive)
			}
			p.OnDelete = v
		case strings.ToLower(ParamIOStatistics):
			if v != "true" && v != "false" {
				err = fmt.Errorf(`want "true" or "false"`)
			}
			p.Statistics = v == "true"
		default:
			if strings.HasPrefix(k, "csi.storage.k8s.io/") {
				continue
			}
			if ok, lerr := parseLimit(&p.Limits, k, v); ok {
				err = lerr
				break
			}
			return p, fmt.Errorf("invalid parameter %q in storage class: known are %s", k,
				strings.Join([]string{
					ParamGlusterVolume, ParamOnDelete, ParamIOStatistics, ParamReadBytesPerSecond,
					ParamWriteBytesPerSecond,
					ParamReadIOPS, ParamWriteIOPS, ParamIsolation, ParamBrickHosts, ParamBrickRoot, ParamReplica,
					ParamBrickForce}, ", "))
		}
		if err != nil {
			return p, fmt.Errorf("invalid value %q of parameter %q: %w", v, k, err)
		}
	}
	if isolation == IsolationDedicated {
		if explicitVol {
			return p, fmt.Errorf(
				"parameter %q cannot be used with %s: %s each PV gets its own GlusterFS volume",
				ParamGlusterVolume, ParamIsolation, IsolationDedicated)
		}
		if err := ds.validate(); err != nil {
			return p, err
		}
		p.GlusterVolume, p.Dedicated = "", ds
		return p, nil
	}
	if len(brickKeys) > 0 {
		return p, fmt.Errorf(
			"parameter %q needs %s: %s (shared volumes use an existing GlusterFS volume)", brickKeys[0],
			ParamIsolation, IsolationDedicated)
	}
	if dedicatedVolRe.MatchString(p.GlusterVolume) {
		return p, fmt.Errorf(
			"invalid value %q of parameter %q: names of the form berth-<16 hex digits> are reserved for "+
				"dedicated volumes", p.GlusterVolume, ParamGlusterVolume)
	}
	if p.GlusterVolume == "" {
		return p, fmt.Errorf(
			"parameter %q is required: it names the GlusterFS volume that holds the PV directories (or "+
				"start the driver with --gluster-volume)", ParamGlusterVolume)
	}
	if !glusterVolRe.MatchString(p.GlusterVolume) {
		return p, fmt.Errorf("invalid value %q of parameter %q: want a GlusterFS volume name",
			p.GlusterVolume, ParamGlusterVolume)
	}
	return p, nil
}

// dedicatedSpec says where the bricks of a dedicated GlusterFS volume go.
type dedicatedSpec struct {
	Hosts []string // one brick per entry, in order (replica sets are consecutive)
	// existing directory on every host; bricks are <root>/<volume>-brick<i> (glusterd makes only
	// the last level)
	BrickRoot string
	Replica   int
	Force     bool // gluster's "force": bricks on the root filesystem, replicas on one host
}

var (
	brickHostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$`)
	brickRootRe = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)
)

func (ds *dedicatedSpec) set(k, v string) error {
	switch k {
	case strings.ToLower(ParamBrickHosts):
		ds.Hosts = nil
		for _, h := range strings.Split(v, ",") {
			h = strings.TrimSpace(h)
			if !brickHostRe.MatchString(h) {
				return fmt.Errorf(
					"want a comma-separated list of host names such as gluster-1,gluster-2: %q is not a host name",
					h)
			}
			if h == "localhost" || strings.HasPrefix(h, "127.") {
				return fmt.Errorf("%q: the gluster CLI refuses loopback brick hosts, use the host's name", h)
			}
			ds.Hosts = append(ds.Hosts, h)
		}
	case strings.ToLower(ParamBrickRoot):
		if !brickRootRe.MatchString(v) || filepath.Clean(v) != v || strings.Contains(v, "/../") ||
			strings.HasSuffix(v, "/..") || strings.Contains(v, "/./") {
			return errors.New(
				"want an absolute, clean directory path such as /data/glusterfs (letters, digits, '.', '_', " +
					"'-')")
		}
		ds.BrickRoot = v
	case strings.ToLower(ParamReplica):
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 16 {
			return errors.New("want a replica count from 1 to 16")
		}
		ds.Replica = n
	case strings.ToLower(ParamBrickForce):
		if v != "true" && v != "false" {
			return errors.New(`want "true" or "false"`)
		}
		ds.Force = v == "true"
	}
	return nil
}

func (ds *dedicatedSpec) validate() error {
	if len(ds.Hosts) == 0 || ds.BrickRoot == "" {
		return fmt.Errorf(
			"%s: %s needs parameters %q (comma-separated brick hosts) and %q (brick directory on them)",
			ParamIsolation, IsolationDedicated, ParamBrickHosts, ParamBrickRoot)
	}
	if len(ds.Hosts)%ds.Replica != 0 {
		return fmt.Errorf(
			"invalid value %d of parameter %q: the %d brick hosts must form whole replica sets", ds.Replica,
			ParamReplica, len(ds.Hosts))
	}
	return nil
}

// bricks are the brick addresses of dedicated volume vol.
func (ds *dedicatedSpec) bricks(vol string) []string {
	var out []string
	for i, h := range ds.Hosts {
		out = append(out, fmt.Sprintf("%s:%s/%s-brick%d", h, ds.BrickRoot, vol, i))
	}
	return out
}

// parseLimit sets one IO limit when k names one; ok is false for other keys.
func parseLimit(l *iolayer.Limits, k, v string) (ok bool, err error) {
	var dst *int64
	switch strings.ToLower(k) {
	case strings.ToLower(ParamReadBytesPerSecond):
		dst = &l.ReadBytesPerSecond
	case strings.ToLower(ParamWriteBytesPerSecond):
		dst = &l.WriteBytesPerSecond
	case strings.ToLower(ParamReadIOPS):
		dst = &l.ReadIOPS
	case strings.ToLower(ParamWriteIOPS):
		dst = &l.WriteIOPS
	default:
		return false, nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return true, fmt.Errorf("want a quantity such as 20Mi or 500: %w", err)
	}
	n, okInt := q.AsInt64()
	if !okInt || n < 0 {
		return true, fmt.Errorf("want a non-negative integer quantity such as 20Mi or 500")
	}
	*dst = n
	return true, nil
}

// parseMutableParams validates VolumeAttributesClass parameters: only IO limits may change.
func parseMutableParams(params map[string]string, l *iolayer.Limits) error {
	for k, v := range params {
		ok, err := parseLimit(l, k, v)
		if !ok {
			return fmt.Errorf("invalid mutable parameter %q: only %s, %s, %s and %s can be modified",
				k, ParamReadBytesPerSecond, ParamWriteBytesPerSecond, ParamReadIOPS, ParamWriteIOPS)
		}
		if err != nil {
			return fmt.Errorf("invalid value %q of mutable parameter %q: %w", v, k, err)
		}
	}
	return nil
}

// withinBase fails unless path is base itself or below it (after cleaning): checked before
// every destructive call.
func withinBase(base, path string) error {
	rel, err := filepath.Rel(filepath.Clean(base), filepath.Clean(path))
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return fmt.Errorf("path %q is outside %q", path, base)
	}
	return nil
}
