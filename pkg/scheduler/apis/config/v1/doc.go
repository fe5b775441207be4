// Package v1 holds the versioned BerthBalanceArgs (kubescheduler.config.k8s.io/v1, kind
// BerthBalanceArgs) that users write in a KubeSchedulerConfiguration, with its defaults and its
// conversion to the internal type. DeepCopy, the conversions and the defaulting entry points are
// generated (zz_generated.*.go, hack/update-codegen.sh); the defaults themselves are in
// defaults.go.
//
// It runs inside berth-scheduler and imports only apimachinery, the in-tree scheduler config
// and ../config.
//
// +k8s:deepcopy-gen=package
// +k8s:conversion-gen=github.com/berth-dev/berth/pkg/scheduler/apis/config
// +k8s:defaulter-gen=TypeMeta
// +groupName=kubescheduler.config.k8s.io
package v1
