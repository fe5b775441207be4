//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// bigImage pushes the echo image plus layers random layers of layerBytes each, as
// berth-dev/<repo>:<tag> (a repository of its own, so the registry's byte count for it is
// this test's alone). It returns the image reference as the nodes name it and the bytes of
// the blobs no node has yet (the new layers and the config): one copy of the image.
func bigImage(t *testing.T, repo string, layers int, layerBytes int64, opts ...remote.Option) (string, int64) {
	t.Helper()
	registry := os.Getenv("BERTH_REGISTRY")
	if registry == "" {
		t.Fatal("BERTH_REGISTRY is not set: source hack/cluster/env (make test-e2e does)")
	}
	base, err := name.ParseReference(registry+"/berth-dev/echo:"+framework.Version(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(base, opts...)
	if err != nil {
		t.Fatalf("echo image not in the cluster registry %s (make images): %v", registry, err)
	}
	fresh := int64(0)
	for i := 0; i < layers; i++ {
		l, err := random.Layer(layerBytes, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
		n, _ := l.Size()
		fresh += n
	}
	ls, _ := img.Layers()
	all := int64(0)
	for _, l := range ls {
		n, _ := l.Size()
		all += n
	}
	cfg, _ := img.RawConfigFile()
	tag := rand.String(8)
	dst, err := name.ParseReference(registry+"/berth-dev/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img, opts...); err != nil {
		t.Fatalf("push %s: %v", dst, err)
	}
	t.Logf("pushed ghcr.io/berth-dev/%s:%s: %d layers, %.1f MiB (%.1f MiB new)", repo, tag, len(ls),
		float64(all)/(1<<20), float64(fresh)/(1<<20))
	return "ghcr.io/berth-dev/" + repo + ":" + tag, fresh + int64(len(cfg))
}

// registryServed is the blob bytes the cluster's registry has sent for repo (hack/registry
// counts them on its /metrics).
func registryServed(t *testing.T, repo string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+os.Getenv("BERTH_REGISTRY")+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("registry metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := fmt.Sprintf("berth_registry_blob_bytes_served_total{repository=%q} ", "berth-dev/"+repo)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// waitRegistrySent waits until the registry has sent bytes of repo's blobs: a pull under way.
func waitRegistrySent(t *testing.T, f *framework.Framework, repo string, bytes float64) {
	t.Helper()
	f.WaitFor(fmt.Sprintf("the registry to have sent %.0f MiB", bytes/(1<<20)), 3*time.Minute,
		func(context.Context) (bool, error) { return registryServed(t, repo) > bytes, nil })
}

// imageDaemonSet runs image on every node (sleeping), nodes listed in avoid excepted.
func imageDaemonSet(t *testing.T, f *framework.Framework, dsName, image string, avoid ...string) {
	t.Helper()
	labels := map[string]string{"app": dsName}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](0),
		Containers: []corev1.Container{{
			Name: "app", Image: image, Command: []string{"/bin/sh", "-c", "sleep 3600"},
		}},
	}
	if len(avoid) > 0 {
		spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname",
					Operator: corev1.NodeSelectorOpNotIn, Values: avoid}}}}}}}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: dsName},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := f.Client.AppsV1().DaemonSets(f.Namespace).Create(f.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create DaemonSet %s: %v", dsName, err)
	}
}

// verifyContentStore checks every blob of the node's containerd content store against its
// digest (what `ctr content verify` would, blob by blob): nothing corrupt was committed.
func verifyContentStore(t *testing.T, node string) {
	t.Helper()
	dir := os.Getenv("BERTH_STATE") + "/containerd/root/io.containerd.content.v1.content/blobs/sha256"
	out, err := framework.NodeExec(node, "sh", "-c", "cd "+dir+" && sha256sum *")
	if err != nil {
		t.Fatalf("reading %s's content store: %v", node, err)
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		fs := strings.Fields(l)
		if len(fs) != 2 {
			continue
		}
		n++
		if fs[0] != fs[1] {
			t.Errorf("%s: blob sha256:%s in the content store hashes to %s", node, fs[1], fs[0])
		}
	}
	t.Logf("%s: %d blobs in containerd's content store, each matches its digest", node, n)
}

// pullerPodOn is the p2p-puller pod on node.
func pullerPodOn(t *testing.T, f *framework.Framework, node string) corev1.Pod {
	t.Helper()
	ps, err := f.Client.CoreV1().Pods("berth-system").List(f.Context(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=p2p-puller", FieldSelector: "spec.nodeName=" + node})
	if err != nil || len(ps.Items) != 1 {
		t.Fatalf("p2p-puller on %s: %v (%d pods)", node, err, len(ps.Items))
	}
	return ps.Items[0]
}

// TestP2PImageAcrossNodes: an image of 100 MB that no node has, rolled out as a DaemonSet over
// every node through each node's containerd and p2p-puller (hosts.toml, as in production),
// costs the registry about one copy, and every node's content store is intact.
func TestP2PImageAcrossNodes(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("p2p")
	nodes := f.ReadyNodes(3)
	repo := "p2p-rollout-" + rand.String(5)
	image, size := bigImage(t, repo, 4, 25<<20)
	begin := time.Now()
	imageDaemonSet(t, f, "rollout", image)
	f.WaitPodsReady("app=rollout", len(nodes), 6*time.Minute)
	served := registryServed(t, repo)
	copies := served / float64(size)
	t.Logf("%d nodes run the image %v after the rollout began; the registry sent %.1f MiB = %.2f copies",
		len(nodes), time.Since(begin).Round(time.Second), served/(1<<20), copies)
	if copies > 1.2 {
		t.Errorf("the registry sent %.2f copies of the image to %d nodes, want about one (<= 1.2)", copies, len(nodes))
	}
	for _, n := range nodes {
		verifyContentStore(t, n)
	}
}

// TestP2PImagePullerKilled: the same rollout with the p2p-puller of the first node to fetch
// from the registry killed mid-pull. Every node still runs the image (containerd retries, the
// puller restarts, peers serve what they have), and no content store holds a corrupt blob.
func TestP2PImagePullerKilled(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("p2p")
	nodes := f.ReadyNodes(3)
	repo := "p2p-killed-" + rand.String(5)
	image, size := bigImage(t, repo, 4, 25<<20)
	imageDaemonSet(t, f, "killed", image)
	// Once the registry has sent part of the image, kill the puller that is fetching it from
	// the registry: the one with the most upstream bytes.
	waitRegistrySent(t, f, repo, 10<<20)
	fetching, most := "", -1.0
	for _, n := range nodes {
		p := pullerPodOn(t, f, n)
		if b := pullerMetric(t, p.Status.PodIP, `berth_p2p_bytes_total{source="upstream"`); b > most {
			fetching, most = n, b
		}
	}
	out, err := framework.NodeExec(fetching, "pkill", "-9", "-x", "p2p-puller")
	if err != nil {
		t.Fatalf("killing the p2p-puller of %s: %v %s", fetching, err, out)
	}
	t.Logf("killed the p2p-puller of %s (%.1f MiB from the registry so far) at %.1f MiB sent by the registry",
		fetching, most/(1<<20), registryServed(t, repo)/(1<<20))
	f.WaitPodsReady("app=killed", len(nodes), 8*time.Minute)
	t.Logf("all %d nodes run the image; the registry sent %.2f copies", len(nodes), registryServed(t, repo)/float64(size))
	for _, n := range nodes {
		verifyContentStore(t, n)
	}
}

// TestP2PImageNodeCut: the rollout with one node cut off from the others and the registry in
// the middle of the pull. The other nodes finish; once the cut heals the last one does too,
// and no content store holds a corrupt blob.
func TestP2PImageNodeCut(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("p2p")
	nodes := f.ReadyNodes(3)
	cut, _ := twoWorkers(t, f)
	repo := "p2p-cut-" + rand.String(5)
	image, size := bigImage(t, repo, 4, 25<<20)
	imageDaemonSet(t, f, "cut", image)
	waitRegistrySent(t, f, repo, 10<<20)
	f.FailNode(t, cut, "cut")
	f.WaitFor("the pods on the nodes not cut off to run", 6*time.Minute, func(ctx context.Context) (bool, error) {
		ps, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=cut"})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, p := range ps.Items {
			if p.Spec.NodeName != cut && framework.PodReady(&p) {
				ready++
			}
		}
		return ready == len(nodes)-1, nil
	})
	t.Logf("the %d nodes not cut off run the image; the registry sent %.2f copies",
		len(nodes)-1, registryServed(t, repo)/float64(size))
	f.RestoreNode(t, cut, "heal")
	f.WaitPodsReady("app=cut", len(nodes), 6*time.Minute)
	t.Logf("%s, healed, runs the image too; the registry sent %.2f copies in all", cut,
		registryServed(t, repo)/float64(size))
	for _, n := range nodes {
		verifyContentStore(t, n)
	}
}

// privateCredentials are the cluster registry's credentials for its private repositories
// (berth-dev/private/..., hack/cluster/env).
func privateCredentials(t *testing.T) (user, password string) {
	t.Helper()
	user, password, ok := strings.Cut(os.Getenv("BERTH_REGISTRY_PRIVATE_CREDENTIALS"), ":")
	if !ok || !strings.HasPrefix(os.Getenv("BERTH_REGISTRY_PRIVATE_PREFIX"), "berth-dev/private/") {
		t.Fatal("the cluster registry has no private repositories: source hack/cluster/env (make test-e2e does)")
	}
	return user, password
}

// ctrPull pulls image on node with containerd's own client, through the hosts.toml p2p-puller
// wrote (the mirror first), as a node holding the registry's credentials does.
func ctrPull(node, image, credentials string) (string, error) {
	st := os.Getenv("BERTH_STATE")
	args := []string{"ctr", "-a", st + "/containerd/containerd.sock", "-n", "k8s.io", "images", "pull",
		"--hosts-dir", st + "/containerd/certs.d"}
	if credentials != "" {
		args = append(args, "--user", credentials)
	}
	return framework.NodeExec(node, append(args, image)...)
}

// blobsOnNode counts which of digests (sha256 hex) are anywhere in the node's containerd content
// store or p2p-puller cache.
func blobsOnNode(t *testing.T, node string, digests []string) int {
	t.Helper()
	st := os.Getenv("BERTH_STATE")
	out, err := framework.NodeExec(node, "sh", "-c", "find "+st+"/containerd/root/io.containerd.content.v1.content "+
		st+"/p2p -type f 2>/dev/null")
	if err != nil {
		t.Fatalf("listing %s's content store and p2p cache: %v", node, err)
	}
	n := 0
	for _, d := range digests {
		if strings.Contains(out, d) {
			n++
		}
	}
	return n
}

// TestP2PPrivateImage: an image in a private repository (the registry wants credentials) is
// pulled on one node by a client with the credentials, through that node's p2p-puller. A pod on
// another node without a pull secret gets nothing: its pull fails with the registry's refusal
// and not one of the image's layers lands on that node, although a peer holds them all. A
// third node with the credentials gets the layers from the peer: the registry sends about one
// copy in all.
func TestP2PPrivateImage(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("p2p")
	nodes := f.ReadyNodes(3)
	withCreds, other := twoWorkers(t, f)
	third := controlPlaneNode(t)
	user, password := privateCredentials(t)
	auth := remote.WithAuth(&authn.Basic{Username: user, Password: password})
	repo := "private/p2p-" + rand.String(5)
	image, size := bigImage(t, repo, 3, 8<<20, auth)
	ref, err := name.ParseReference(os.Getenv("BERTH_REGISTRY")+"/berth-dev/"+
		strings.TrimPrefix(image, "ghcr.io/berth-dev/"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, auth)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	var private []string // the layers only this image has (the echo base is public)
	for _, l := range ls[len(ls)-3:] {
		d, _ := l.Digest()
		private = append(private, d.Hex)
	}

	if out, err := ctrPull(withCreds, image, user+":wrong"); err == nil {
		t.Fatalf("%s pulled the private image with a wrong password:\n%s", withCreds, out)
	}
	if out, err := ctrPull(withCreds, image, user+":"+password); err != nil {
		t.Fatalf("pulling the private image with its credentials on %s: %v\n%s", withCreds, err, out)
	}
	if n := blobsOnNode(t, withCreds, private); n != len(private) {
		t.Fatalf("%s holds %d of the %d private layers after its pull", withCreds, n, len(private))
	}
	sent := registryServed(t, repo)
	t.Logf("%s pulled the private image with its credentials; the registry sent %.2f copies",
		withCreds, sent/float64(size))

	// A pod without a pull secret on another node: refused, and nothing of the image there.
	otherPuller := pullerPodOn(t, f, other).Status.PodIP
	peerBytes := pullerMetric(t, otherPuller, `berth_p2p_bytes_total{source="peer"`)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "no-secret"},
		Spec: corev1.PodSpec{
			NodeName:                      other,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{Name: "app", Image: image,
				Command: []string{"/bin/sh", "-c", "sleep 3600"}}},
		},
	}
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var reason string
	f.WaitFor("the pod without a pull secret to fail its pull", 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				reason = w.Message
				return true, nil
			}
			if c.State.Running != nil {
				t.Fatalf("the pod without a pull secret runs the private image on %s", other)
			}
		}
		return false, nil
	})
	t.Logf("%s, no pull secret: %s", other, reason)
	if r := strings.ToLower(reason); !strings.Contains(r, "401") && !strings.Contains(r, "unauthorized") {
		t.Errorf("the pull failed for another reason than the registry's refusal: %s", reason)
	}
	if got := pullerMetric(t, otherPuller, `berth_p2p_bytes_total{source="peer"`); got != peerBytes {
		t.Errorf("%s's p2p-puller downloaded %.0f bytes from peers during the refused pull", other, got-peerBytes)
	}
	if n := blobsOnNode(t, other, private); n != 0 {
		t.Errorf("%s, refused by the registry, holds %d of the private layers (from a peer)", other, n)
	}
	if got := registryServed(t, repo); got != sent {
		t.Errorf("the refused pull took %.0f blob bytes from the registry", got-sent)
	}

	// A node with the credentials gets the layers from its peer, not the registry.
	if out, err := ctrPull(third, image, user+":"+password); err != nil {
		t.Fatalf("pulling the private image with its credentials on %s: %v\n%s", third, err, out)
	}
	copies := registryServed(t, repo) / float64(size)
	t.Logf("%s pulled it too, with the credentials; the registry sent %.2f copies in all", third, copies)
	if copies > 1.2 {
		t.Errorf("two nodes with the credentials cost the registry %.2f copies, want about one (<= 1.2)", copies)
	}
	for _, n := range nodes {
		verifyContentStore(t, n)
	}
}
