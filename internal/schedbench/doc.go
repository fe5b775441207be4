// Package schedbench is the harness behind hack/bench-scheduler.sh and the scheduler integration
// tests: it starts the berth kube-scheduler in-process (the same app.Setup/app.Run path as
// cmd/scheduler-plugin) against a real kube-apiserver, creates fake Node objects (no kubelets:
// pods only need binding), creates pods and measures where and how fast they are bound.
package schedbench
