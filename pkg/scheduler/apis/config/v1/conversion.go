package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/conversion"
)

// conversion-gen converts every field itself except the optional quantities, which have no
// converter in apimachinery: these two are picked up by name.

// Convert_Pointer_resource_Quantity_To_resource_Quantity copies a set quantity; nil (only seen
// on args that were not defaulted) becomes zero.
func Convert_Pointer_resource_Quantity_To_resource_Quantity( //nolint:revive // conversion-gen naming
	in **resource.Quantity, out *resource.Quantity, _ conversion.Scope,
) error {
	if *in == nil {
		*out = resource.Quantity{}
		return nil
	}
	*out = (*in).DeepCopy()
	return nil
}

// Convert_resource_Quantity_To_Pointer_resource_Quantity always sets the versioned field, so
// the scheduler's printed effective configuration shows every value.
func Convert_resource_Quantity_To_Pointer_resource_Quantity( //nolint:revive // conversion-gen naming
	in *resource.Quantity, out **resource.Quantity, _ conversion.Scope,
) error {
	q := in.DeepCopy()
	*out = &q
	return nil
}
