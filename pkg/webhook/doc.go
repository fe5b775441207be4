// Package webhook is berth's mutating admission webhook for pods.
//
// It sits between kubectl (or a Deployment controller) and the kube-apiserver:
// the apiserver sends every CREATE of a pod in a namespace labelled
// berth.dev/inject=enabled to this webhook, which reads the pod's berth.dev/
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
//   - the volumes the hooks and the annotations ask for.
//
// A pod is mutated once: a status annotation (berth.dev/status) records what
// was injected and a pod carrying it is never changed again. Bad annotations
// deny the pod with a message naming the key, the problem and a valid example.
//
// The package also holds the PreStartReporter controller, which turns a
// failed berth-prestart init container into a pod Event, and Run, which wires
// the webhook server, certificate rotation and the reporter into a manager.
package webhook
