// Package app is the scheduler-plugin binary's command line (the berth-scheduler Deployment):
// the upstream kube-scheduler command (k8s.io/kubernetes/cmd/kube-scheduler/app) with
// pkg/scheduler/balance registered and berth's --version. It imports pkg/scheduler/... and
// internal/version.
package app
