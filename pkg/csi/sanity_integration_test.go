//go:build integration

package csi

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
)

// TestSanity runs the whole csi-sanity suite (no skips of our own) against the driver on a
// real glusterd, with a staging dir and an expand size.
func TestSanity(t *testing.T) {
	td := startDriver(t)
	cfg := sanity.NewTestConfig()
	cfg.Address = td.endpoint
	cfg.TargetPath = filepath.Join(td.state, "sanity-target")
	cfg.StagingPath = filepath.Join(td.state, "sanity-staging")
	cfg.TestVolumeSize = 64 << 20
	cfg.TestVolumeExpandSize = 128 << 20
	cfg.TestVolumeParameters = map[string]string{ParamGlusterVolume: plainVol}
	cfg.TestVolumeMutableParameters = map[string]string{ParamWriteBytesPerSecond: "50Mi"}
	cfg.IdempotentCount = 2
	cfg.CreateTargetDir = func(p string) (string, error) { return p, os.MkdirAll(p, 0o750) }
	cfg.CreateStagingDir = cfg.CreateTargetDir
	sanity.Test(t, cfg)
}
