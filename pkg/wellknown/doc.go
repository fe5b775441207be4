// Package wellknown names the berth.dev/ annotation, label and resource keys that more than one
// berth component reads: the scheduler plugin scores pods by them and the mutating webhook must
// let them through on the pods it validates instead of calling them typos. Keys that only one
// component reads stay in that component's package. It is imported by pkg/webhook and
// pkg/scheduler and imports nothing of berth.
package wellknown
