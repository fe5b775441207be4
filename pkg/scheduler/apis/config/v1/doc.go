// Package v1 holds the versioned BerthBalanceArgs (kubescheduler.config.k8s.io/v1, kind
// BerthBalanceArgs) that users write in a KubeSchedulerConfiguration, with its defaults and its
// conversion to the internal type.
package v1
