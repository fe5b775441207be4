// Package schedbench is the harness behind hack/bench-scheduler.sh and the scheduler integration
// tests: it starts the berth kube-scheduler in-process (the same app.Setup/app.Run path as
// cmd/scheduler-plugin) against a real kube-apiserver, creates fake Node objects (no kubelets:
// pods only need binding), creates pods and measures where and how fast they are bound.
//
// SimulateFill and SimulateMatrix (sim.go) run the same placement offline, the profiles' score
// plugins on in-memory nodes, to try a score change over many seeds in seconds; the figures the
// docs keep come from the real scheduler.
package schedbench
