package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// PeerKeySecret is the Secret (key "key") holding the cluster's peer key.
const PeerKeySecret = "p2p-puller-peer-key"

// EnsurePeerKey returns the peer key from the Secret in namespace, creating
// it with 32 random bytes when it does not exist. Create is atomic: when
// pullers race, the losers read the winner's key, so all of them agree.
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
			Labels: map[string]string{"app.kubernetes.io/name": "p2p-puller", "app.kubernetes.io/part-of": "berth"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"key": []byte(hex.EncodeToString(raw))},
	}
	if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err == nil {
		return s.Data["key"], nil
	} else if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("failed to create Secret %s/%s for the peer key (RBAC: create secrets): %w", namespace, PeerKeySecret, err)
	}
	return readPeerKey(ctx, client, namespace) // another puller won the race
}

// readPeerKey reads the key from the Secret; NotFound errors pass through unwrapped.
func readPeerKey(ctx context.Context, client kubernetes.Interface, namespace string) ([]byte, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, PeerKeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read Secret %s/%s (RBAC: get on that secret): %w", namespace, PeerKeySecret, err)
	}
	if len(s.Data["key"]) == 0 {
		return nil, fmt.Errorf("the Secret %s/%s has no data under \"key\": delete it to have one generated, or put a random string there", namespace, PeerKeySecret)
	}
	return s.Data["key"], nil
}

// peerKey returns the peer key: --peer-key-file when that file exists, else
// the Secret through the API, created if absent when create is set (the
// daemon) and only read otherwise (the preheat CLI). It never returns an
// empty key: the peer API is not served unauthenticated.
func (o *options) peerKey(ctx context.Context, create bool) ([]byte, error) {
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
		return nil, fmt.Errorf("no peer key: %s and the Kubernetes API is not available to get or create Secret %s/%s: %w",
			noFile, o.namespace, PeerKeySecret, err)
	}
	if create {
		return EnsurePeerKey(ctx, client, o.namespace)
	}
	key, err := readPeerKey(ctx, client, o.namespace)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("no peer key: %s and Secret %s/%s does not exist yet (the pullers create it at start)",
			noFile, o.namespace, PeerKeySecret)
	}
	return key, err
}

func (o *options) kubeClient() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes config (in-cluster or --kubeconfig): %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("failed to create a Kubernetes client: %w", err)
	}
	return client, nil
}
