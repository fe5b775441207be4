package schedbench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Params sizes one benchmark run.
type Params struct {
	// Nodes and Pods size the throughput run (upstream floor: 5000 nodes, 270 pods/s).
	Nodes, Pods int
	// QualityNodes is the size of each node group of the quality matrix; 0 skips the matrix.
	QualityNodes int
	// Seeds is the number of pod sequences per cell of the quality matrix.
	Seeds int
	// Parallel is how many quality runs fill their node groups at the same time.
	Parallel int
	// QualityOnly skips the throughput run.
	QualityOnly bool
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
	// Cells is the quality matrix: every node shape × workload, over Seeds seeds.
	Cells []Cell
	// QualityTime is how long the matrix took.
	QualityTime time.Duration
}

// Run runs the quality matrix, then the throughput comparison, against the apiserver behind c.
// dir holds scheduler configs; kubeconfig is the path the in-process schedulers use.
func Run(ctx context.Context, c kubernetes.Interface, dir, kubeconfig string, p Params,
	logf func(string, ...any)) (Report, error) {
	r := Report{Params: p}
	var err error
	if p.QualityNodes > 0 {
		start := time.Now()
		mp := MatrixParams{Nodes: p.QualityNodes, Seeds: max(1, p.Seeds), Parallel: p.Parallel,
			Shapes: Shapes, Workloads: Workloads}
		if r.Cells, err = RunMatrix(ctx, c, dir, kubeconfig, mp, logf); err != nil {
			return r, err
		}
		r.QualityTime = time.Since(start)
	}
	if p.QualityOnly {
		return r, nil
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

// Table renders the report as the Markdown tables kept in docs/scheduler.md.
func (r Report) Table() string {
	var b strings.Builder
	if !r.QualityOnly {
		ratio := "n/a"
		if r.DefaultRate > 0 {
			ratio = fmt.Sprintf("%.2f", r.BerthRate/r.DefaultRate)
		}
		fmt.Fprintf(&b, "| metric | default-scheduler | berth-scheduler | berth/default |\n|---|---|---|---|\n")
		fmt.Fprintf(&b, "| throughput, %d nodes / %d pods (pods/s) | %.0f | %.0f | %s |\n\n",
			r.Nodes, r.Pods, r.DefaultRate, r.BerthRate, ratio)
	}
	if len(r.Cells) > 0 {
		fmt.Fprintf(&b, "Quality: %d nodes per group, %d seeds per cell, mean (min-max) over seeds, "+
			"CV and fullest node at %.0f %% fill (%s):\n\n", r.QualityNodes, max(1, r.Seeds), 100*FillTarget,
			r.QualityTime.Round(time.Second))
		b.WriteString(MatrixTable(r.Cells))
		b.WriteString("\n" + MatrixSummary(r.Cells))
	}
	return b.String()
}
