package hook

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"
)

// preOnlineLoop takes the app online and keeps the marker honest:
//
//	wait for the check URL to answer 2xx -> run the preOnline script -> write the marker (online)
//	online: marker removed by someone (the app's preStop) -> stay offline for good (draining)
//	online: check URL fails OfflineAfter times in a row -> remove the marker, start over
func (s *Sidecar) preOnlineLoop(ctx context.Context) error {
	log := klog.FromContext(ctx).WithValues("marker", s.Marker, "checkURL", s.CheckURL)
	// A marker left by an earlier run is stale until the app proves healthy again.
	s.takeOffline(ctx, "sidecar starting")
	retry := 2 * time.Second
	for {
		log.Info("preOnline: waiting for the check URL to answer 2xx")
		if !s.waitHealthy(ctx) {
			return nil
		}
		log.Info("preOnline: check URL answered 2xx")
		if s.PreOnline != nil {
			log.Info("preOnline: running script")
			if _, err := s.PreOnline.Run(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				log.Info("preOnline: script failed, pod stays offline; retrying", "err", err, "in", retry)
				if !sleep(ctx, retry) {
					return nil
				}
				retry = min(2*retry, time.Minute)
				continue
			}
			log.Info("preOnline: script succeeded")
		}
		if err := writeMarker(s.Marker); err != nil {
			return err
		}
		s.online.Store(true)
		log.Info("preOnline: ONLINE, marker written; the pod becomes Ready")
		if drained := s.watchOnline(ctx); drained || ctx.Err() != nil {
			return nil
		}
	}
}

// watchOnline returns true when the marker was removed (drain: stay offline),
// false when the app stopped answering and preOnline must start over.
func (s *Sidecar) watchOnline(ctx context.Context) bool {
	log := klog.FromContext(ctx)
	fails := 0
	for sleep(ctx, s.PollInterval) {
		if !exists(s.Marker) {
			s.online.Store(false)
			log.Info("preOnline: marker removed (preStop): OFFLINE, draining; staying offline")
			return true
		}
		if err := s.check(ctx); err != nil {
			fails++
			if fails >= s.OfflineAfter {
				s.takeOffline(ctx, fmt.Sprintf("check URL failed %d times in a row: %v", fails, err))
				return false
			}
			continue
		}
		fails = 0
	}
	return false
}

func (s *Sidecar) waitHealthy(ctx context.Context) bool {
	for {
		if err := s.check(ctx); err == nil {
			return true
		}
		if !sleep(ctx, s.PollInterval) {
			return false
		}
	}
}

// takeOffline removes the marker (if any) and logs why.
func (s *Sidecar) takeOffline(ctx context.Context, why string) {
	s.online.Store(false)
	err := os.Remove(s.Marker)
	switch {
	case err == nil:
		klog.FromContext(ctx).Info("preOnline: OFFLINE, marker removed", "why", why)
	case !os.IsNotExist(err):
		klog.FromContext(ctx).Error(err, "preOnline: failed to remove the marker", "why", why)
	}
}

// writeMarker creates the marker atomically, so a reader never sees a half-written file.
func writeMarker(p string) error {
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, []byte("online "+time.Now().UTC().Format(time.RFC3339Nano)+"\n"),
		0o644); err != nil {
		return fmt.Errorf("failed to write the online marker %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("failed to write the online marker %q: %w", p, err)
	}
	return nil
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
