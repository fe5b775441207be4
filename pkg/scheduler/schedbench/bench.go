package schedbench

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Params sizes one benchmark run.
type Params struct {
	// Nodes and Pods size the throughput run (upstream floor: 5000 nodes, 270 pods/s).
	Nodes, Pods int
	// QualityNodes is the size of each node group of the quality run.
	QualityNodes int
	// Timeout bounds each throughput phase.
	Timeout time.Duration
	// BerthFirst runs the berth throughput phase before the default one (the second phase
	// of a run tends to be faster, so runs in both orders show the bias).
	BerthFirst bool
}

// Report holds the figures of one run, berth next to the default scheduler.
type Report struct {
	Params
	DefaultRate, BerthRate float64
	Default, Berth         Quality
	// Bound is CapacityBound of the quality sequence: no scheduler can place more.
	Bound int
}

// qualityPods is the length of the quality run's pod sequence on n nodes, well beyond what fits.
func qualityPods(n int) int { return 40 * n }

// Run runs the quality comparison, then the throughput comparison, against the apiserver behind
// c. dir holds scheduler configs; kubeconfig is the path the in-process schedulers use.
func Run(ctx context.Context, c kubernetes.Interface, dir, kubeconfig string, p Params, logf func(string, ...any)) (Report, error) {
	r := Report{Params: p}
	var err error
	if p.QualityNodes > 0 {
		if r.Default, r.Berth, err = runQuality(ctx, c, dir, kubeconfig, p.QualityNodes, logf); err != nil {
			return r, err
		}
		r.Bound = CapacityBound(Sequence(qualityPods(p.QualityNodes), qualitySeed), p.QualityNodes)
		logf("quality: default %+v, berth %+v, per-dimension capacity bound %d pods", r.Default, r.Berth, r.Bound)
	}
	logf("creating %d nodes for the throughput run", p.Nodes)
	if err := CreateNodes(ctx, c, "node", p.Nodes, nil); err != nil {
		return r, err
	}
	cfg := Config(kubeconfig, 0)
	phases := []struct {
		name string
		rate *float64
	}{{DefaultSchedulerName, &r.DefaultRate}, {BerthSchedulerName, &r.BerthRate}}
	if p.BerthFirst {
		phases[0], phases[1] = phases[1], phases[0]
	}
	for _, ph := range phases {
		logf("throughput: %d pods with %s", p.Pods, ph.name)
		if *ph.rate, err = Throughput(ctx, c, dir, cfg, ph.name, "tp-"+ph.name, p.Pods, p.Timeout); err != nil {
			return r, err
		}
		logf("throughput: %s %.1f pods/s", ph.name, *ph.rate)
	}
	return r, nil
}

// runQuality fills two identical node groups, one per scheduler, with the same pod sequence,
// then deletes the groups so they do not weigh on the throughput run.
func runQuality(ctx context.Context, c kubernetes.Interface, dir, kubeconfig string, n int, logf func(string, ...any)) (Quality, Quality, error) {
	var def, berth Quality
	groups := map[string]string{"qa": DefaultSchedulerName, "qb": BerthSchedulerName}
	names := map[string][]string{}
	for g := range groups {
		if err := CreateNodes(ctx, c, g, n, map[string]string{"group": g}); err != nil {
			return def, berth, err
		}
		for i := range n {
			names[g] = append(names[g], fmt.Sprintf("%s-%d", g, i))
		}
	}
	stop, err := StartScheduler(ctx, dir, Config(kubeconfig, 100))
	if err != nil {
		return def, berth, err
	}
	defer stop()
	for _, g := range []string{"qa", "qb"} {
		logf("quality: filling %d nodes with %s", n, groups[g])
		q, err := FillGroup(ctx, c, groups[g], "quality-"+g, g, names[g], qualityPods(n), time.Minute)
		if err != nil {
			return def, berth, err
		}
		if g == "qa" {
			def = q
		} else {
			berth = q
		}
		if err := DeletePods(ctx, c, "quality-"+g); err != nil {
			return def, berth, err
		}
		for _, name := range names[g] {
			if err := c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				return def, berth, fmt.Errorf("failed to delete node %s: %w", name, err)
			}
		}
	}
	return def, berth, nil
}

// Table renders the report as the Markdown table kept in docs/scheduler.md.
func (r Report) Table() string {
	var b strings.Builder
	ratio := func(berth, def float64) string {
		if def == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", berth/def)
	}
	fmt.Fprintf(&b, "| metric | default-scheduler | berth-scheduler | berth/default |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| throughput, %d nodes / %d pods (pods/s) | %.0f | %.0f | %s |\n", r.Nodes, r.Pods, r.DefaultRate, r.BerthRate, ratio(r.BerthRate, r.DefaultRate))
	dims := []string{"CPU", "memory", "network"}
	for d, name := range dims {
		fmt.Fprintf(&b, "| CV of per-node %s demand at %.0f %% fill, %d nodes | %.3f | %.3f | %s |\n",
			name, 100*FillTarget, r.QualityNodes, r.Default.CV[d], r.Berth.CV[d], ratio(r.Berth.CV[d], r.Default.CV[d]))
	}
	fmt.Fprintf(&b, "| pods placed before the first unschedulable | %d | %d | %s |\n", r.Default.Placed, r.Berth.Placed, ratio(float64(r.Berth.Placed), float64(r.Default.Placed)))
	if r.Bound > 0 {
		share := func(placed int) string { return fmt.Sprintf("%.1f %%", 100*float64(placed)/float64(r.Bound)) }
		fmt.Fprintf(&b, "| offline upper bound on pods placed: %d (per-dimension capacity, not an exact packing); share reached | %s | %s | |\n",
			r.Bound, share(r.Default.Placed), share(r.Berth.Placed))
	}
	for d, name := range dims {
		fmt.Fprintf(&b, "| %s fill at the first unschedulable pod | %.0f %% | %.0f %% | |\n", name, 100*r.Default.Final[d], 100*r.Berth.Final[d])
	}
	return b.String()
}
