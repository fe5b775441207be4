// Package scheduler is berth's kube-scheduler extension: the BerthBalance Score plugin
// (subpackage balance) and its typed args (apis/config), registered into the upstream
// kube-scheduler (pinned v1.35) by cmd/scheduler-plugin/app. It runs as a Deployment in
// berth-system, either as a second scheduler (its own schedulerName and leader-election lease)
// or in place of the default one. The benchmark harness is internal/schedbench.
package scheduler
