// Package scheme registers the BerthBalance args into the kube-scheduler's config scheme, the way
// kubernetes-sigs/scheduler-plugins does, so KubeSchedulerConfiguration files can carry them.
// Import it for its side effect before the scheduler command parses its config.
package scheme

import (
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
	configv1 "github.com/berth-dev/berth/pkg/scheduler/apis/config/v1"
)

// Scheme is the kube-scheduler's own config scheme, with the berth args added.
var Scheme = schedscheme.Scheme

func init() {
	// schedscheme.Scheme may have been built before our builders were registered (package
	// init order), so add our types to it explicitly as well.
	utilruntime.Must(config.AddToScheme(Scheme))
	utilruntime.Must(configv1.AddToScheme(Scheme))
}
