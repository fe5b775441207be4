package config

import (
	"k8s.io/apimachinery/pkg/runtime"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
)

// SchemeGroupVersion is the internal version of kubescheduler.config.k8s.io, shared with the
// in-tree plugin args.
var SchemeGroupVersion = schedconfig.SchemeGroupVersion

// AddToScheme registers the internal args type into a scheme.
func AddToScheme(s *runtime.Scheme) error {
	return addKnownTypes(s)
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &BerthBalanceArgs{})
	return nil
}

func init() {
	// Registering into the in-tree builder makes the scheduler's private plugin-arg conversion
	// scheme (built lazily from this builder) know our type too.
	schedconfig.SchemeBuilder.Register(addKnownTypes)
}
