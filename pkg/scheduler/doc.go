// Package scheduler builds cmd/scheduler-plugin: the upstream kube-scheduler command (pinned
// v1.35) with berth's BerthBalance Score plugin registered and its args added to the scheduler's
// config scheme. It runs as a Deployment in berth-system, either as a second scheduler (its own
// schedulerName and leader-election lease) or in place of the default one.
//
// Subpackages: balance (the plugin), apis/config (its typed args), schedbench (the benchmark
// harness used by hack/bench-scheduler.sh).
package scheduler
