// Package webhook is berth's mutating admission webhook for pods.
//
// It sits between kubectl (or a Deployment controller) and the kube-apiserver:
// the apiserver sends every CREATE of a pod labelled berth.dev/inject=enabled
// in a namespace labelled berth.dev/inject=enabled to this webhook, which reads the pod's berth.dev/
// annotations (see ParseAnnotations) and answers with a JSON patch that adds
//
//   - berth-install: an init container (berth image) that copies the
//     berth-hook binary into a shared emptyDir, so hooks can run in the app's
//     own image (its shell, its files);
//   - berth-prestart: an init container that runs the preStart script with
//     bounded retries (pkg/hook.RunPreStart);
//   - berth-sidecar: a native sidecar (an init container with restartPolicy
//     Always, KEP-753) that runs preOnline, owns the online marker, serves the
//     debug-aware liveness endpoint and the TCP debug proxy;
//   - the volumes the hooks and the annotations ask for;
//   - the scheduling gate berth.dev/after, for a pod whose berth.dev/after
//     Services do not have enough ready endpoints yet.
//
// A pod is mutated once: a status annotation (berth.dev/status) records what
// was injected and a pod carrying it is never changed again. Bad annotations
// deny the pod with a message naming the key, the problem and a valid example.
//
// The package also holds the PreStartReporter controller, which turns a
// failed berth-prestart init container into a pod Event; the AfterController,
// which removes the berth.dev/after gate once the Services are ready (watching
// EndpointSlices through informers, on the leader replica); and Run, which
// wires the webhook server, certificate rotation and both controllers into a
// manager.
package webhook
