package webhook

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// certSync copies the serving certificate from the Secret the rotator keeps
// into CertDir, where the webhook server's certwatcher reloads it. This
// replaces a Secret volume: no kubelet sync delay (up to a minute) after a
// rotation, and the pod can keep a read-only root filesystem with an emptyDir.
type certSync struct {
	reader client.Reader
	secret types.NamespacedName
	dir    string
	// interval between checks once the certificate is on disk; before that, every 500ms.
	interval time.Duration
}

// NeedLeaderElection: every replica needs the certificate on its own disk.
func (c *certSync) NeedLeaderElection() bool { return false }

// Start syncs until ctx is done.
func (c *certSync) Start(ctx context.Context) error {
	log := klog.FromContext(ctx).WithValues("secret", c.secret, "dir", c.dir)
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("failed to create certificate directory %q: %w", c.dir, err)
	}
	synced := false
	for {
		changed, err := c.syncOnce(ctx)
		switch {
		case err != nil:
			log.Error(err, "Failed to sync the serving certificate")
		case changed:
			log.Info("Serving certificate written")
			synced = true
		}
		wait := c.interval
		if !synced {
			wait = 500 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// syncOnce writes tls.crt and tls.key when the Secret holds a certificate that differs from the files.
func (c *certSync) syncOnce(ctx context.Context) (bool, error) {
	s := &corev1.Secret{}
	if err := c.reader.Get(ctx, c.secret, s); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("failed to read secret %s: %w", c.secret, err)
	}
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return false, nil // the rotator has not filled it yet
	}
	old, _ := os.ReadFile(filepath.Join(c.dir, corev1.TLSCertKey)) // a missing file just means "write it"
	if bytes.Equal(old, crt) {
		return false, nil
	}
	// Key first: certwatcher reloads on the certificate's change and then needs the matching key.
	for _, f := range []struct {
		name string
		data []byte
	}{{corev1.TLSPrivateKeyKey, key}, {corev1.TLSCertKey, crt}} {
		tmp := filepath.Join(c.dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return false, fmt.Errorf("failed to write %q: %w", tmp, err)
		}
		if err := os.Rename(tmp, filepath.Join(c.dir, f.name)); err != nil {
			return false, fmt.Errorf("failed to install %q: %w", f.name, err)
		}
	}
	return true, nil
}
