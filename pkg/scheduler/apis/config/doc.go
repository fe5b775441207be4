// Package config holds the internal (unversioned) type of the BerthBalance plugin args as the
// kube-scheduler sees them after decoding a KubeSchedulerConfiguration. The versioned type users
// write lives in ./v1, defaults and conversions there too, validation in ./validation, and
// ./scheme registers everything into the scheduler's own config scheme. DeepCopy is generated
// (zz_generated.deepcopy.go, hack/update-codegen.sh).
//
// It runs inside berth-scheduler and imports only apimachinery and the in-tree scheduler config.
//
// +k8s:deepcopy-gen=package
package config
