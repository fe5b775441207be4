package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// MutationPatch mutates a copy of pod and returns the JSON patch from pod to it.
//
// The patch names only what berth changed: annotation and label keys,
// containers added at the front or end of initContainers, volumes appended,
// and, inside a changed container, the difference between its typed forms
// before and after. Fields this webhook's API version does not know (sent by
// a newer apiserver) are never in a replaced value, so they survive; and the
// pod is not re-encoded and diffed as a whole, which keeps a review cheap.
func MutationPatch(pod *corev1.Pod, cfg *Config, opts Options) ([]jsonpatch.JsonPatchOperation, error) {
	mutated := pod.DeepCopy()
	if err := Mutate(mutated, cfg, opts); err != nil {
		return nil, err
	}
	ops := mapOps("/metadata/annotations", pod.Annotations, mutated.Annotations)
	ops = append(ops, mapOps("/metadata/labels", pod.Labels, mutated.Labels)...)
	front := 0
	if n := len(mutated.Spec.InitContainers); n > len(pod.Spec.InitContainers) &&
		mutated.Spec.InitContainers[0].Name == InstallName {
		front = 1
	}
	ops = append(ops, listOps("/spec/initContainers", len(pod.Spec.InitContainers), front,
		mutated.Spec.InitContainers)...)
	ops = append(ops, listOps("/spec/volumes", len(pod.Spec.Volumes), 0, mutated.Spec.Volumes)...)
	ops = append(ops, listOps("/spec/schedulingGates", len(pod.Spec.SchedulingGates), 0,
		mutated.Spec.SchedulingGates)...)
	for i := range pod.Spec.Containers {
		cops, err := diffOps("/spec/containers/"+strconv.Itoa(i), &pod.Spec.Containers[i],
			&mutated.Spec.Containers[i])
		if err != nil {
			return nil, err
		}
		ops = append(ops, cops...)
	}
	return ops, nil
}

// mapOps adds the keys of after that differ from before (berth only adds keys).
func mapOps(path string, before, after map[string]string) []jsonpatch.JsonPatchOperation {
	if len(before) == 0 && len(after) > 0 {
		return []jsonpatch.JsonPatchOperation{{Operation: "add", Path: path, Value: after}}
	}
	keys := make([]string, 0, len(after))
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	ops := make([]jsonpatch.JsonPatchOperation, 0, len(keys))
	for _, k := range keys {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path + "/" + escape(k),
			Value: after[k]})
	}
	return ops
}

// listOps adds the first `front` items of after at the front of a list that
// had n items, and appends the items after the original ones.
func listOps[T any](path string, n, front int, after []T) []jsonpatch.JsonPatchOperation {
	if len(after) == n {
		return nil
	}
	if n == 0 {
		return []jsonpatch.JsonPatchOperation{{Operation: "add", Path: path, Value: after}}
	}
	var ops []jsonpatch.JsonPatchOperation
	for i := front - 1; i >= 0; i-- {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path + "/0", Value: after[i]})
	}
	for _, item := range after[front+n:] {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path + "/-", Value: item})
	}
	return ops
}

// diffOps is the JSON patch between two typed values, under path.
func diffOps(path string, before, after any) ([]jsonpatch.JsonPatchOperation, error) {
	b, err := json.Marshal(before)
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s: %w", path, err)
	}
	a, err := json.Marshal(after)
	if err != nil {
		return nil, fmt.Errorf("failed to encode %s: %w", path, err)
	}
	if bytes.Equal(a, b) {
		return nil, nil
	}
	ops, err := jsonpatch.CreatePatch(b, a)
	if err != nil {
		return nil, fmt.Errorf("failed to compute the patch of %s: %w", path, err)
	}
	for i := range ops {
		ops[i].Path = path + ops[i].Path
	}
	return ops, nil
}

// escape encodes a map key as a JSON pointer segment (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
