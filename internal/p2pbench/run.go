package p2pbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Modes of a run.
const (
	// Direct: every node pulls from the registry, as containerd does without berth.
	Direct = "direct"
	// P2P: every node pulls through its own p2p-puller.
	P2P = "p2p"
)

// RegistryPort is where the registry host serves.
const RegistryPort = "5000"

// Env is a topology with its registry front and what the pullers share.
type Env struct {
	Topo  *Topology
	Front *Front
	Spec  PullerSpec
}

// Result is one run: n nodes pulling one image at the same moment.
type Result struct {
	N    int
	Mode string
	// All is the time until every node had the image; Each, every node's.
	All  time.Duration
	Each []time.Duration
	// Upstream is the blob bytes the registry sent; RegistryLink, every
	// byte its link sent (manifests, headers, TCP and IP included).
	Upstream     int64
	RegistryLink uint64
	// MaxUpload is the most piece bytes one puller served to peers, by
	// MaxUploadNode, which itself fetched MaxUploadNodeUpstream from the registry.
	MaxUpload             float64
	MaxUploadNode         string
	MaxUploadNodeUpstream float64
	// Uploads is what each node uploaded, and Unavailable how many of its piece asks a peer
	// answered "not here", in node order.
	Uploads     []float64
	Unavailable []float64
	Failures    int
	Errors      []error
	// CPUMean and CPUPeak are the machine's busy fractions (see CPUSampler);
	// CPUOwn is the CPU time the benchmark's own processes (this one: registry,
	// front and clients; the pullers) used, as a fraction of all cores' time.
	CPUMean, CPUPeak, CPUOwn float64
}

// Pct returns the p-th percentile (nearest rank) of the nodes' times.
func (r Result) Pct(p int) time.Duration {
	s := slices.Clone(r.Each)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[max(0, min(len(s)-1, (len(s)*p+99)/100-1))]
}

// Run has the first n nodes pull repo:tag at the same moment, in mode.
func (e *Env) Run(ctx context.Context, mode string, n int, repo, tag string) (Result, error) {
	if n > len(e.Topo.Nodes) {
		return Result{}, fmt.Errorf("run of %d nodes on a topology of %d", n, len(e.Topo.Nodes))
	}
	nodes := e.Topo.Nodes[:n]
	base := "http://" + net.JoinHostPort(RegistryIP, RegistryPort)
	var pullers []*Puller
	if mode == P2P {
		var err error
		if pullers, err = e.startPullers(ctx, nodes); err != nil {
			return Result{}, err
		}
		defer stopAll(pullers)
		base = "http://" + MirrorAddr
	}
	clients := make([]*Client, n)
	for i, h := range nodes {
		clients[i] = NewClient(h)
		defer clients[i].Close()
	}
	res := Result{N: n, Mode: mode, Each: make([]time.Duration, n)}
	errs := make([]error, n)
	e.Front.Reset()
	tx0, err := e.Topo.Registry.TxBytes()
	if err != nil {
		return res, err
	}
	own0, err := ownCPU(pullers)
	if err != nil {
		return res, err
	}
	cpu := StartCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = clients[i].Pull(ctx, base, repo, tag)
			res.Each[i] = time.Since(start)
		})
	}
	wg.Wait()
	res.All = time.Since(start)
	if res.CPUMean, res.CPUPeak, err = cpu.Stop(); err != nil {
		return res, err
	}
	own1, err := ownCPU(pullers)
	if err != nil {
		return res, err
	}
	res.CPUOwn = (own1 - own0).Seconds() / res.All.Seconds() / float64(runtime.NumCPU())
	res.Upstream = e.Front.BlobBytes()
	tx1, err := e.Topo.Registry.TxBytes()
	if err != nil {
		return res, err
	}
	res.RegistryLink = tx1 - tx0
	for i, err := range errs {
		if err != nil {
			res.Failures++
			res.Errors = append(res.Errors, fmt.Errorf("%s: %w", nodes[i].Name, err))
		}
	}
	return res, e.uploads(ctx, pullers, &res)
}

// uploads reads what each node uploaded and how many of its piece asks were answered "not
// here", and finds the node that served peers the most: the hotspot.
func (e *Env) uploads(ctx context.Context, pullers []*Puller, res *Result) error {
	for _, p := range pullers {
		m, err := p.Metrics(ctx, "berth_p2p_uploaded_bytes_total",
			`berth_p2p_piece_failures_total{reason="unavailable"}`, `berth_p2p_bytes_total{source="upstream"}`)
		if err != nil {
			return err
		}
		res.Uploads, res.Unavailable = append(res.Uploads, m[0]), append(res.Unavailable, m[1])
		if m[0] >= res.MaxUpload {
			res.MaxUpload, res.MaxUploadNode, res.MaxUploadNodeUpstream = m[0], p.Host.Name, m[2]
		}
	}
	return nil
}

// startPullers starts a puller on every node (in parallel: a puller takes
// a moment to come up) knowing exactly these nodes as its peers.
func (e *Env) startPullers(ctx context.Context, nodes []*Host) ([]*Puller, error) {
	spec := e.Spec
	spec.Peers = StaticPeers(nodes)
	pullers := make([]*Puller, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, h := range nodes {
		wg.Go(func() { pullers[i], errs[i] = StartPuller(ctx, spec, h) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stopAll(pullers)
		return nil, err
	}
	return pullers, nil
}

// ownCPU is the CPU time this process and the pullers have used.
func ownCPU(pullers []*Puller) (time.Duration, error) {
	sum, err := ProcCPU(os.Getpid())
	for _, p := range pullers {
		t, perr := ProcCPU(p.cmd.Process.Pid)
		sum += t
		err = errors.Join(err, perr)
	}
	return sum, err
}

func stopAll(pullers []*Puller) {
	var wg sync.WaitGroup
	for _, p := range pullers {
		if p != nil {
			wg.Go(p.Stop)
		}
	}
	wg.Wait()
}
