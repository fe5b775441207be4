//go:build integration

package p2p_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p"
)

// BenchmarkP2PFanout is `make bench-p2p` (hack/bench-p2p.sh): N nodes pull
// the same image at the same moment, directly from a registry whose egress
// is shaped, and through N p2p-pullers, in the same run. It prints one table
// row per (layers, N, mode). Knobs (env): BERTH_BENCH_P2P_MB (image size,
// 100), BERTH_BENCH_P2P_RATE_MB (registry egress MB/s, 100),
// BERTH_BENCH_P2P_N (node counts, "1,2,4,8,16,32"), BERTH_BENCH_P2P_LAYERS ("1,4").
func BenchmarkP2PFanout(b *testing.B) {
	mb := envInt(b, "BERTH_BENCH_P2P_MB", "100")
	rate := envInt(b, "BERTH_BENCH_P2P_RATE_MB", "100")
	ns := envInts(b, "BERTH_BENCH_P2P_N", "1,2,4,8,16,32")
	layerSets := envInts(b, "BERTH_BENCH_P2P_LAYERS", "1,4")
	up := testenv.StartRegistry(b, testenv.WithEgressLimit(int64(rate)<<20))
	fmt.Printf("\nimage %d MB of random bytes, registry egress shaped to %d MB/s, pieces 1 MiB\n\n", mb, rate)
	fmt.Println("| layers | N | mode | upstream bytes / image | max one node uploaded / image " +
		"| all N done (s) | ÷ one node's direct pull | p50 node (s) | p95 node (s) | failures |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for b.Loop() {
		for _, layers := range layerSets {
			repo := fmt.Sprintf("bench%d:v1", layers)
			_, img := up.PushRandomImage(b, repo, layers, int64(mb)<<20/int64(layers))
			size := imageSize(b, img)
			one := 0.0
			for _, n := range ns {
				for _, mode := range []string{"direct", "p2p"} {
					r := runFanout(b, up, repo, n, mode)
					if one == 0 && mode == "direct" {
						one = r.all.Seconds()
					}
					upload := "–" // direct pulls upload nothing
					if mode == "p2p" {
						upload = fmt.Sprintf("%.2f", float64(r.maxUpload)/float64(size))
					}
					fmt.Printf("| %d | %d | %s | %.2f | %s | %.2f | %.2f | %.2f | %.2f | %d |\n", layers, n, mode,
						float64(r.upstream)/float64(size), upload, r.all.Seconds(), r.all.Seconds()/one, r.pct(50), r.pct(95), r.failures)
					reportFanout(b, fmt.Sprintf("L%d-N%d-%s", layers, n, mode), r, size)
				}
			}
		}
	}
}

// reportFanout puts a table row out as metrics too, so benchstat can compare runs.
func reportFanout(b *testing.B, key string, r fanout, size int64) {
	b.ReportMetric(r.all.Seconds(), key+"-all-s")
	b.ReportMetric(r.pct(95), key+"-p95-s")
	b.ReportMetric(float64(r.upstream)/float64(size), key+"-upstream-images")
	if r.maxUpload > 0 {
		b.ReportMetric(float64(r.maxUpload)/float64(size), key+"-max-upload-images")
	}
	b.ReportMetric(float64(r.failures), key+"-failures")
}

type fanout struct {
	upstream int64
	// maxUpload is the most piece bytes one puller served to peers: about
	// N-1 images when every node pulls from the seed, about 1 when relays share it.
	maxUpload int64
	all       time.Duration
	each      []time.Duration
	failures  int
}

func (f fanout) pct(p int) float64 {
	s := slices.Clone(f.each)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, (len(s)*p+99)/100-1)].Seconds()
}

func runFanout(b *testing.B, up *testenv.Registry, repo string, n int, mode string) fanout {
	refs := make([]name.Reference, n)
	var nodes []*node
	if mode == "p2p" {
		nodes = startNodes(b, n, up, func(_ int, c *p2p.Config) { c.PieceSize, c.PieceWait = 1<<20, 15*time.Second })
		for i, nd := range nodes {
			refs[i] = nd.ref(b, repo)
		}
	} else {
		for i := range refs {
			refs[i], _ = name.ParseReference(up.Host+"/"+repo, name.Insecure)
		}
	}
	up.ResetCounters()
	res := fanout{each: make([]time.Duration, n)}
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = pull(b.Context(), refs[i], authn.Anonymous)
			res.each[i] = time.Since(start)
		})
	}
	wg.Wait()
	res.all = time.Since(start)
	res.upstream = up.BlobBytes()
	for i, err := range errs {
		if err != nil {
			res.failures++
			fmt.Fprintf(os.Stderr, "%s pull %d of %d: %v\n", mode, i, n, err)
		}
	}
	for _, nd := range nodes {
		res.maxUpload = max(res.maxUpload, int64(nd.metric(b, "berth_p2p_uploaded_bytes_total", nil)))
	}
	for _, nd := range nodes { // free the disk now: 32 caches of 100 MB add up
		nd.kill()
		_ = os.RemoveAll(nd.cache)
	}
	return res
}

func envInt(b *testing.B, k, def string) int {
	v, err := strconv.Atoi(envOrDefault(k, def))
	if err != nil || v <= 0 {
		b.Fatalf("%s must be a positive integer, got %q", k, os.Getenv(k))
	}
	return v
}

func envInts(b *testing.B, k, def string) []int {
	var out []int
	for _, s := range strings.Split(envOrDefault(k, def), ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v <= 0 {
			b.Fatalf("%s must be a list of positive integers like %q, got %q", k, def, os.Getenv(k))
		}
		out = append(out, v)
	}
	return out
}

func envOrDefault(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
