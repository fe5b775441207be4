package v1

import (
	"k8s.io/apimachinery/pkg/runtime"
	schedv1 "k8s.io/kube-scheduler/config/v1"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, the version of KubeSchedulerConfiguration
// the args are written in.
var SchemeGroupVersion = schedv1.SchemeGroupVersion

var (
	// localSchemeBuilder is the in-tree v1 builder, as in kubernetes-sigs/scheduler-plugins: it
	// feeds the scheduler's plugin-arg conversion scheme, which is built lazily from it (see
	// ../register.go). The generated conversions register themselves here too.
	localSchemeBuilder = &schedv1.SchemeBuilder
	ourSchemeBuilder   = runtime.NewSchemeBuilder(addKnownTypes, RegisterDefaults,
		RegisterConversions)
	// AddToScheme registers the versioned type, its defaults and conversions into a scheme.
	AddToScheme = ourSchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &BerthBalanceArgs{})
	return nil
}

func init() {
	localSchemeBuilder.Register(addKnownTypes, RegisterDefaults)
}
