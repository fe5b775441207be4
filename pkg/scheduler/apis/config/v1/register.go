package v1

import (
	"k8s.io/apimachinery/pkg/runtime"
	schedv1 "k8s.io/kube-scheduler/config/v1"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, the version of KubeSchedulerConfiguration
// the args are written in.
var SchemeGroupVersion = schedv1.SchemeGroupVersion

// AddToScheme registers the versioned type, its defaults and conversions into a scheme.
func AddToScheme(s *runtime.Scheme) error {
	for _, f := range []func(*runtime.Scheme) error{addKnownTypes, RegisterDefaults, RegisterConversions} {
		if err := f(s); err != nil {
			return err
		}
	}
	return nil
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &BerthBalanceArgs{})
	return nil
}

func init() {
	// The in-tree v1 builder feeds the scheduler's plugin-arg conversion scheme; see ../register.go.
	schedv1.SchemeBuilder.Register(addKnownTypes, RegisterDefaults, RegisterConversions)
}
