// Package app is the webhook binary's command line (the berth-webhook Deployment): its flags,
// their validation and the wiring of pkg/webhook's Run to a Kubernetes client and the process's
// signals. It imports pkg/webhook and internal/.
package app
