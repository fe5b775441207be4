// Package defaultprofile builds the score plugins through which the upstream default
// kube-scheduler profile weighs node resources, as that profile configures them, so that tests
// and the offline simulator compare berth with what the default scheduler really decides. It
// imports nothing of berth, so BerthBalance's own tests can use it.
package defaultprofile

import (
	"context"
	"fmt"

	fwk "k8s.io/kube-scheduler/framework"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/feature"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins/noderesources"
)

// Resources are the resources, and their weights, that the default profile's NodeResourcesFit
// and NodeResourcesBalancedAllocation score.
var Resources = []schedconfig.ResourceSpec{{Name: "cpu", Weight: 1}, {Name: "memory", Weight: 1}}

// ResourceScorers returns the in-tree NodeResourcesFit (LeastAllocated) and
// NodeResourcesBalancedAllocation score plugins with the default profile's args. Both weigh 1
// in that profile; its other score plugins are neutral for pods without affinity, spread
// constraints or images to pull.
func ResourceScorers(ctx context.Context) (fit, balanced fwk.ScorePlugin, err error) {
	f, err := noderesources.NewFit(ctx, &schedconfig.NodeResourcesFitArgs{
		ScoringStrategy: &schedconfig.ScoringStrategy{Type: schedconfig.LeastAllocated, Resources: Resources},
	}, nil, feature.Features{})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to build NodeResourcesFit: %w", err)
	}
	b, err := noderesources.NewBalancedAllocation(ctx,
		&schedconfig.NodeResourcesBalancedAllocationArgs{Resources: Resources}, nil, feature.Features{})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to build NodeResourcesBalancedAllocation: %w", err)
	}
	return f.(fwk.ScorePlugin), b.(fwk.ScorePlugin), nil
}
