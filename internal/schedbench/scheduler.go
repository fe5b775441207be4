package schedbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"k8s.io/component-base/configz"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	schedapp "github.com/berth-dev/berth/cmd/scheduler-plugin/app"
)

// Profile names used by the harness configs.
const (
	DefaultSchedulerName = "default-scheduler"
	BerthSchedulerName   = "berth-scheduler"
)

// Config returns a KubeSchedulerConfiguration with two profiles: the upstream defaults
// (default-scheduler) and berth (berth-scheduler: BerthBalance at weight 5 replacing
// NodeResourcesBalancedAllocation, which it subsumes). pct is percentageOfNodesToScore (0 = adaptive).
func Config(kubeconfig string, pct int) string {
	return fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: %q, qps: 5000, burst: 5000}
leaderElection: {leaderElect: false}
percentageOfNodesToScore: %d
profiles:
- schedulerName: %s
- schedulerName: %s
  plugins:
    multiPoint:
      enabled: [{name: BerthBalance, weight: 5}]
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}]
`, kubeconfig, pct, DefaultSchedulerName, BerthSchedulerName)
}

// runMu serialises schedulers in one process: the upstream command registers a global configz.
var runMu sync.Mutex

// StartScheduler runs the berth kube-scheduler in-process with configYAML until the returned
// stop function is called. dir holds the config file.
func StartScheduler(ctx context.Context, dir, configYAML string) (stop func(), err error) {
	path := filepath.Join(dir, "scheduler-config.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
		return nil, fmt.Errorf("failed to write scheduler config %s: %w", path, err)
	}
	opts := options.NewOptions()
	opts.ConfigFile = path
	opts.SecureServing.BindPort = 0 // no /healthz server: tests run several schedulers
	runMu.Lock()
	ctx, cancel := context.WithCancel(ctx)
	cc, sched, err := app.Setup(ctx, opts, schedapp.Registry()...)
	if err != nil {
		cancel()
		runMu.Unlock()
		return nil, fmt.Errorf("failed to set up the scheduler: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := app.Run(ctx, cc, sched); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "Scheduler stopped")
		}
	}()
	return func() {
		cancel()
		<-done
		configz.Delete("componentconfig")
		runMu.Unlock()
	}, nil
}
