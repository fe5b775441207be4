package balance

import (
	"context"
	"math"
	"testing"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
)

// TestOverflowingNodeCapacityUsesDefault: a node labelled 20E (which Value() wraps to 0) gets
// the default capacity instead of rejecting every bandwidth pod.
func TestOverflowingNodeCapacityUsesDefault(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	node := makeNode("huge", 8, 32, "")
	node.Labels = map[string]string{AnnotationBandwidth: "20E"}
	ni := nodeInfo(pl, node)
	cs := framework.NewCycleState()
	pod := makePod("p", 100, 100, "1G")
	if _, st := pl.PreFilter(context.Background(), cs, pod, nil); !st.IsSuccess() {
		t.Fatalf("PreFilter = %v", st)
	}
	if st := pl.Filter(context.Background(), cs, pod, ni); !st.IsSuccess() {
		t.Fatalf("Filter on a node labelled 20E = %v, want success (default 10G capacity)", st)
	}
}

func TestSaturatingArithmetic(t *testing.T) {
	t.Parallel()
	if got := satAdd(math.MaxInt64-1, 5); got != math.MaxInt64 {
		t.Errorf("satAdd = %d, want MaxInt64", got)
	}
	if got := satMul(1<<40, 1<<40); got != math.MaxInt64 {
		t.Errorf("satMul = %d, want MaxInt64", got)
	}
	if got := satAdd(2, 3); got != 5 {
		t.Errorf("satAdd(2,3) = %d", got)
	}
}

// TestNodeDeleteAndReAdd: deleting a node keeps its pods' bandwidth until they are deleted, as
// the scheduler's own cache does, so a node re-added under the same name never goes negative.
func TestNodeDeleteAndReAdd(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	c := pl.cache
	node := makeNode("n", 8, 32, "10G")
	pods := podsN("p", 3, 100, 100, "1G")
	nodeInfo(pl, node, pods...)
	check := func(step string, want int64) {
		t.Helper()
		c.mu.RLock()
		defer c.mu.RUnlock()
		var got int64
		if n := c.nodes["n"]; n != nil {
			got = n.annotated
		}
		if got != want {
			t.Fatalf("%s: node accounts %d bit/s, want %d", step, got, want)
		}
	}
	_ = c.get(node)
	check("three pods", 3e9)
	c.nodeHandler().OnDelete(node)
	check("node deleted, pods not yet", 3e9)
	readded := node.DeepCopy()
	if l := c.get(readded); l.annotated != 3e9 || l.declared != 10e9 {
		t.Fatalf("re-added node load = %+v, want 3G used of 10G", l)
	}
	for _, p := range pods {
		p = p.DeepCopy()
		p.Spec.NodeName = "n"
		c.podHandler().OnDelete(p)
	}
	check("pods deleted", 0)
	c.nodeHandler().OnDelete(readded)
	if len(c.nodes) != 0 || len(c.pods) != 0 {
		t.Fatalf("cache not empty after everything was deleted: %d nodes, %d pods", len(c.nodes), len(c.pods))
	}
}

// TestMalformedNodeLoggedOnce: a node status update every few seconds with the same bad value
// logs once; a new bad value logs again.
func TestMalformedNodeLoggedOnce(t *testing.T) {
	t.Parallel()
	var lines int
	c := newNetCache(funcr.New(func(_, _ string) { lines++ }, funcr.Options{}))
	node := makeNode("n", 8, 32, "ten-gig")
	for range 5 {
		node = node.DeepCopy() // what a status update delivers
		if l := c.get(node); l.declared != 0 {
			t.Fatalf("malformed node declared %d", l.declared)
		}
	}
	if lines != 1 {
		t.Fatalf("logged %d times for 5 updates with the same bad value, want 1", lines)
	}
	node = node.DeepCopy()
	node.Annotations[AnnotationBandwidth] = "fast"
	_ = c.get(node)
	if lines != 2 {
		t.Fatalf("logged %d times after the value changed, want 2", lines)
	}
}

// handleWithFactory is a Handle that only provides an informer factory, which is all New uses.
type handleWithFactory struct {
	fwk.Handle
	f informers.SharedInformerFactory
}

func (h handleWithFactory) SharedInformerFactory() informers.SharedInformerFactory { return h.f }

// TestProfilesShareCache: two profiles of one scheduler (same informer factory) with different
// args see each other's reservations, each with its own defaults.
func TestProfilesShareCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := handleWithFactory{f: informers.NewSharedInformerFactory(fake.NewClientset(), 0)}
	factory := NewFactory()
	newPl := func(defBW, heavy string) *Balance {
		args, err := getArgs(nil)
		if err != nil {
			t.Fatal(err)
		}
		args.DefaultNodeBandwidth, args.NetworkHeavyPodBandwidth = resource.MustParse(defBW),
			resource.MustParse(heavy)
		p, err := factory(ctx, args, h)
		if err != nil {
			t.Fatal(err)
		}
		return p.(*Balance)
	}
	a, b := newPl("10G", "500M"), newPl("20G", "2G")
	if a.cache != b.cache {
		t.Fatal("two profiles on one informer factory got different caches")
	}
	// Another scheduler in the same process (another registry) keeps its own accounting.
	if p, err := NewFactory()(ctx, nil, h); err != nil || p.(*Balance).cache == a.cache {
		t.Fatalf("a second scheduler's plugin shares the first one's cache (err %v)", err)
	}
	other := newTestPlugin(t)
	if other.cache == a.cache {
		t.Fatal("a plugin without a handle shares the scheduler's cache")
	}
	node := makeNode("n", 8, 32, "")
	heavyPod := makePod("heavy", 100, 100, "")
	heavyPod.Annotations[AnnotationProfile] = "network"
	if st := a.Reserve(ctx, framework.NewCycleState(), makePod("x", 100, 100, "3G"), "n"); !st.IsSuccess() {
		t.Fatal(st)
	}
	if st := a.Reserve(ctx, framework.NewCycleState(), heavyPod, "n"); !st.IsSuccess() {
		t.Fatal(st)
	}
	for _, tc := range []struct {
		pl            *Balance
		wantCap, want int64
	}{{a, 10e9, 3e9 + 500e6}, {b, 20e9, 3e9 + 2e9}} {
		c, used := tc.pl.netOf(tc.pl.cache.get(node), 0)
		if c != tc.wantCap || used != tc.want {
			t.Errorf("profile sees capacity %d used %d, want %d and %d", c, used, tc.wantCap, tc.want)
		}
	}
}
