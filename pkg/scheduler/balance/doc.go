// Package balance implements BerthBalance, a kube-scheduler plugin (PreFilter, Filter, PreScore,
// Score, NormalizeScore, Reserve, Sign) that places pods so that every node's CPU, memory and
// network demand stay balanced with each other and across the cluster, and, once the cluster is
// nearly full in a dimension, packs that dimension and keeps the room the pod shapes seen lately
// need, so that large pods still find room.
//
// It runs inside cmd/scheduler-plugin, a kube-scheduler built with app.WithPlugin. Pod network
// demand comes from the kubernetes.io/ingress-bandwidth and kubernetes.io/egress-bandwidth
// annotations (the CNI bandwidth plugin's convention), the berth.dev/network-bandwidth annotation
// or extended resource; node capacity from the berth.dev/network-bandwidth allocatable, annotation
// or label, or a configured default. See docs/scheduler.md for the scoring math.
package balance
