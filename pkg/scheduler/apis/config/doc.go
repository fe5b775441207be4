// Package config holds the internal (unversioned) type of the BerthBalance plugin args as the
// kube-scheduler sees them after decoding a KubeSchedulerConfiguration. The versioned type users
// write lives in ./v1, defaults and conversions there too, validation in ./validation, and
// ./scheme registers everything into the scheduler's own config scheme.
package config
