package balance

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
	configv1 "github.com/berth-dev/berth/pkg/scheduler/apis/config/v1"
	"github.com/berth-dev/berth/pkg/scheduler/apis/config/validation"
)

// Name is the plugin's name in the scheduler registry, in KubeSchedulerConfiguration and in logs.
const Name = "BerthBalance"

// stateKey is where PreFilter and PreScore leave the pod's demand in the CycleState.
const stateKey fwk.StateKey = "PreScore" + Name

// signKey is the key of the plugin's signature fragment for opportunistic batching.
const signKey = "berth.dev/BerthBalance.Demand()"

// Balance is the BerthBalance plugin.
type Balance struct {
	handle fwk.Handle
	logger klog.Logger
	cache  *netCache

	// defCap is DefaultNodeBandwidth, the capacity of nodes that declare none.
	defCap           int64
	wCPU, wMem, wNet float64
	// heavyDefault is the bandwidth of a network-profile pod that declares none.
	heavyDefault int64
	// overcommit is BandwidthOvercommitPercent; 0 turns the Filter off.
	overcommit int64
	// packAbove is PackAboveFillPercent as a fraction: the mean fill of a dimension above
	// which Score adds its packing term; 1 never packs.
	packAbove float64
	// recent holds the shapes of the pods scored lately, for Score's headroom check.
	recent recentShapes
	// snapshot is the map PreScore copies the cache into for Score. It and loads are kept
	// from one scheduling cycle to the next instead of allocated per pod (70 KB a pod at 680
	// nodes): the framework runs scheduling cycles one at a time (only binding cycles run
	// concurrently), and only PreScore and Score of the current cycle read them.
	snapshot map[string]nodeLoad
	// loads is the same snapshot in the order of PreScore's nodes, for its mean fill.
	loads []nodeLoad
}

var (
	_ fwk.PreFilterPlugin     = &Balance{}
	_ fwk.PreFilterExtensions = &Balance{}
	_ fwk.EnqueueExtensions   = &Balance{}
	_ fwk.FilterPlugin        = &Balance{}
	_ fwk.PreScorePlugin      = &Balance{}
	_ fwk.ScorePlugin         = &Balance{}
	_ fwk.ScoreExtensions     = &Balance{}
	_ fwk.ReservePlugin       = &Balance{}
	_ fwk.SignPlugin          = &Balance{}
)

// NewFactory returns the plugin's factory for the scheduler's registry. The plugins it builds for
// the profiles of one scheduler share one bandwidth cache, so a pod reserved by one profile counts
// for the others; call it once per scheduler.
func NewFactory() frameworkruntime.PluginFactory {
	shared := &caches{m: map[informers.SharedInformerFactory]*netCache{}}
	return func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		return newPlugin(ctx, obj, h, shared)
	}
}

// New builds the plugin from its args (internal config.BerthBalanceArgs; nil means defaults),
// with a bandwidth cache of its own: a scheduler with several profiles registers NewFactory()
// instead, whose plugins share one. Invalid args fail here, which stops the scheduler at start
// with the field named.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	return newPlugin(ctx, obj, h, &caches{m: map[informers.SharedInformerFactory]*netCache{}})
}

func newPlugin(ctx context.Context, obj runtime.Object, h fwk.Handle, shared *caches) (fwk.Plugin,
	error) {
	args, err := getArgs(obj)
	if err != nil {
		return nil, err
	}
	if err := validation.ValidateBerthBalanceArgs(nil, args); err != nil {
		return nil, fmt.Errorf("invalid %s args: %w", Name, err)
	}
	logger := klog.FromContext(ctx).WithValues("plugin", Name)
	pl := &Balance{
		handle:       h,
		logger:       logger,
		defCap:       args.DefaultNodeBandwidth.Value(),
		wCPU:         float64(args.CPUWeight),
		wMem:         float64(args.MemoryWeight),
		wNet:         float64(args.NetworkWeight),
		heavyDefault: args.NetworkHeavyPodBandwidth.Value(),
		overcommit:   args.BandwidthOvercommitPercent,
		packAbove:    float64(args.PackAboveFillPercent) / 100,
	}
	if h != nil && h.SharedInformerFactory() != nil {
		if pl.cache, err = shared.cacheFor(h.SharedInformerFactory(),
			klog.FromContext(ctx).WithValues("plugin", Name)); err != nil {
			return nil, err
		}
	} else {
		pl.cache = newNetCache(logger)
	}
	logger.V(4).Info("Plugin configured", "weights",
		[]int64{args.CPUWeight, args.MemoryWeight, args.NetworkWeight},
		"defaultNodeBandwidth", args.DefaultNodeBandwidth.String(), "overcommitPercent",
		args.BandwidthOvercommitPercent, "packAboveFillPercent", args.PackAboveFillPercent)
	return pl, nil
}

// getArgs type-asserts the args, defaulting them when the framework passes none.
func getArgs(obj runtime.Object) (*config.BerthBalanceArgs, error) {
	if obj == nil {
		var v1args configv1.BerthBalanceArgs
		configv1.SetDefaults_BerthBalanceArgs(&v1args)
		var args config.BerthBalanceArgs
		if err := configv1.Convert_v1_BerthBalanceArgs_To_config_BerthBalanceArgs(&v1args, &args,
			nil); err != nil {
			return nil, fmt.Errorf("defaulting %s args: %w", Name, err)
		}
		return &args, nil
	}
	args, ok := obj.(*config.BerthBalanceArgs)
	if !ok {
		return nil, fmt.Errorf("want args to be of type BerthBalanceArgs, got %T", obj)
	}
	return args, nil
}

// Name returns the plugin name.
func (pl *Balance) Name() string { return Name }

// SignPod signs the pod with everything its score and filter depend on: its CPU and memory
// requests, its bandwidth and profile. Two pods with the same signature get the same scores on
// every node, so the scheduler may reuse a sorted node list across them (KEP-5598). A pod with
// a malformed annotation is not signed, so it never shares a cached result.
func (pl *Balance) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	d, err := podDemand(pod, pl.heavyDefault)
	if err != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, err.Error())
	}
	return []fwk.SignFragment{{Key: signKey, Value: d}}, nil
}

// state is the pod's demand, computed once per cycle.
type state struct {
	Demand
	// malformed is set when an annotation could not be parsed: the pod is scored neutrally.
	malformed bool
	// nodes is PreScore's snapshot of the cache for the nodes to score, so that Score reads
	// it without taking the cache's lock.
	nodes map[string]nodeLoad
	// meanFill is the mean fill fraction of cpu, memory and network over the nodes PreScore
	// saw, and keep is 1 − 1/N for their number N: the cluster terms of Score's variance.
	meanFill [3]float64
	keep     float64
	// pack is, per dimension, the weight of Score's packing term (0 while the mean fill is at
	// or below PackAboveFillPercent, rising to 1 at 100 %) divided by the mean capacity of the
	// nodes PreScore saw, so that free capacity is counted in units of an average node.
	pack [3]float64
	// guard holds, while packing, the other recent pod shapes: Score marks a node where this
	// pod would end the room for one of them.
	guard   [shapeSlots]shape
	guarded int
}

// shape is the pod's demand as a shape.
func (s *state) shape() shape { return shape{s.MilliCPU, s.Memory, s.Network} }

// Clone implements fwk.StateData; the state is read-only after PreFilter (PreScore adds the
// snapshot before any Score runs).
func (s *state) Clone() fwk.StateData { return s }

// netOf turns a node's load into this profile's view: capacity (the declared one or
// DefaultNodeBandwidth) and used bandwidth (annotated pods, network-profile pods at this
// profile's NetworkHeavyPodBandwidth, and extended-resource requests from NodeInfo).
func (pl *Balance) netOf(l nodeLoad, extended int64) (capacity, used int64) {
	capacity = l.declared
	if capacity == 0 {
		capacity = pl.defCap
	}
	return capacity, satAdd(satAdd(l.annotated, satMul(l.heavy, pl.heavyDefault)), extended)
}

func (pl *Balance) demandState(cs fwk.CycleState, pod *v1.Pod) *state {
	if c, err := cs.Read(stateKey); err == nil {
		if s, ok := c.(*state); ok {
			return s
		}
	}
	d, err := podDemand(pod, pl.heavyDefault)
	s := &state{Demand: d}
	if err != nil {
		s.Demand, s.malformed = Demand{MilliCPU: d.MilliCPU, Memory: d.Memory}, true
		pl.logger.Info("Malformed pod annotation: no bandwidth accounted, neutral score",
			"pod", klog.KObj(pod), "err", err)
	}
	cs.Write(stateKey, s)
	return s
}

// Reserve adds the pod's annotation bandwidth to its node in the assume cache, so the next pods
// of a burst see it before the bind lands.
func (pl *Balance) Reserve(_ context.Context, cs fwk.CycleState, pod *v1.Pod,
	nodeName string) *fwk.Status {
	s := pl.demandState(cs, pod)
	pl.cache.set(pod.UID, s.podNet(nodeName, true))
	return nil
}

// Unreserve takes back what Reserve added, unless the pod was bound meanwhile.
func (pl *Balance) Unreserve(_ context.Context, _ fwk.CycleState, pod *v1.Pod, _ string) {
	pl.cache.forget(pod.UID, true)
}
