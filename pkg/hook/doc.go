// Package hook is the logic of berth-hook, the small binary the berth webhook
// injects into annotated pods (see pkg/webhook). It runs inside the pod:
//
//   - install: in the berth-install init container, copies itself into a
//     shared emptyDir so the other hooks can run in the app's own image;
//   - prestart (RunPreStart): in the berth-prestart init container, runs the
//     preStart script with bounded retries, exponential backoff and a total
//     deadline that survive container restarts (state in an emptyDir), and
//     leaves the reason of a final failure in the termination message;
//   - sidecar (Sidecar): in the berth-sidecar native sidecar, waits for the
//     app's check URL, runs the preOnline script, writes the online marker,
//     serves /online (readiness) and the debug-aware /livez, and runs the
//     TCP debug proxy (DebugProxy);
//   - prestop (PreStop): the app container's preStop hook: removes the
//     marker, waits the drain period, then lets the kubelet send SIGTERM.
//
// Every step logs a timestamped line to the container's log.
package hook
