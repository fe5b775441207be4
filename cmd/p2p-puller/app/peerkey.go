package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/kubeclient"
)

// PeerKeySecret is the Secret (key "key") holding the cluster's peer key.
const PeerKeySecret = "p2p-puller-peer-key"

func newPeerKeyCommand() *cobra.Command {
	var namespace, kubeconfig string
	cmd := &cobra.Command{
		Use:   "peer-key",
		Short: "create the peer key Secret unless it exists (the Job p2p-puller-peer-key runs this)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := &options{kubeconfig: kubeconfig}
			client, err := o.kubeClient()
			if err != nil {
				return err
			}
			if _, err := EnsurePeerKey(cmd.Context(), client, namespace); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Secret %s/%s holds the peer key\n", namespace, PeerKeySecret)
			return nil
		},
	}
	cmd.Flags().StringVar(&namespace, "namespace", envOr("POD_NAMESPACE", "berth-system"),
		"namespace of the p2p-puller pods (env POD_NAMESPACE)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	return cmd
}

// EnsurePeerKey returns the peer key from the Secret in namespace, creating
// it with 32 random bytes when it does not exist. It runs in the one-shot
// Job p2p-puller-peer-key (`p2p-puller peer-key`), never in the DaemonSet:
// creating Secrets cannot be limited to a name, and a ServiceAccount that may
// create Secrets may mint tokens of any ServiceAccount of its namespace.
// Create is atomic: when Jobs race, the losers read the winner's key.
func EnsurePeerKey(ctx context.Context, client kubernetes.Interface, namespace string) ([]byte, error) {
	secrets := client.CoreV1().Secrets(namespace)
	key, err := readPeerKey(ctx, client, namespace)
	if err == nil || !apierrors.IsNotFound(err) {
		return key, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("failed to generate a peer key: %w", err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: PeerKeySecret, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "p2p-puller",
				"app.kubernetes.io/part-of": "berth"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"key": []byte(hex.EncodeToString(raw))},
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err == nil {
		return s.Data["key"], nil
	} else if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("failed to create Secret %s/%s for the peer key (RBAC of "+
			"p2p-puller-keygen: create secrets): %w", namespace, PeerKeySecret, err)
	}
	return readPeerKey(ctx, client, namespace) // another Job won the race
}

// WaitPeerKey reads the peer key Secret, waiting (polling every interval)
// while it does not exist yet: on a fresh install the DaemonSet may start
// before the Job p2p-puller-peer-key has created it.
func WaitPeerKey(ctx context.Context, client kubernetes.Interface, namespace string,
	interval time.Duration) ([]byte, error) {
	logged := false
	for {
		key, err := readPeerKey(ctx, client, namespace)
		if !apierrors.IsNotFound(err) {
			return key, err
		}
		if !logged {
			klog.FromContext(ctx).Info("Waiting for the peer key Secret (created by the Job "+
				"p2p-puller-peer-key, or by hand)",
				"secret", namespace+"/"+PeerKeySecret,
				"create", "kubectl -n "+namespace+" create secret generic "+PeerKeySecret+
					" --from-literal=key=$(openssl rand -hex 32)")
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for Secret %s/%s: %w", namespace, PeerKeySecret, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// readPeerKey reads the key from the Secret; NotFound errors pass through unwrapped.
func readPeerKey(ctx context.Context, client kubernetes.Interface, namespace string) ([]byte, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, PeerKeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read Secret %s/%s (RBAC: get on that secret): %w", namespace,
			PeerKeySecret, err)
	}
	if len(s.Data["key"]) == 0 {
		return nil, fmt.Errorf("the Secret %s/%s has no data under \"key\": delete it to have one "+
			"generated, or put a random string there", namespace, PeerKeySecret)
	}
	return s.Data["key"], nil
}

// peerKey returns the peer key: --peer-key-file when that file exists, else
// the Secret through the API (get only), waited for when wait is set (the
// daemon) and read once otherwise (the preheat CLI). It never returns an
// empty key: the peer API is not served unauthenticated.
func (o *options) peerKey(ctx context.Context, wait bool) ([]byte, error) {
	if o.peerKeyFile != "" {
		key, err := os.ReadFile(o.peerKeyFile)
		switch {
		case err == nil && len(key) == 0:
			return nil, fmt.Errorf("--peer-key-file %s is empty: peer requests must be signed", o.peerKeyFile)
		case err == nil:
			return key, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("failed to read --peer-key-file: %w", err)
		}
	}
	noFile := "--peer-key-file is not set"
	if o.peerKeyFile != "" {
		noFile = fmt.Sprintf("--peer-key-file %q does not exist", o.peerKeyFile)
	}
	client, err := o.kubeClient()
	if err != nil {
		return nil, fmt.Errorf("no peer key: %s and the Kubernetes API is not available to get Secret "+
			"%s/%s: %w",
			noFile, o.namespace, PeerKeySecret, err)
	}
	if wait {
		return WaitPeerKey(ctx, client, o.namespace, 2*time.Second)
	}
	key, err := readPeerKey(ctx, client, o.namespace)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no peer key: %s and Secret %s/%s does not exist yet (the Job "+
			"p2p-puller-peer-key creates it)",
			noFile, o.namespace, PeerKeySecret)
	}
	return key, err
}

func (o *options) kubeClient() (kubernetes.Interface, error) {
	return kubeclient.NewClientset(o.kubeconfig)
}
