package app

import (
	"path"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/webhook"
)

// TestInjectedArgsParse: every berth-hook command line the webhook writes into a pod (every
// hook and option turned on) parses with this binary's flags.
func TestInjectedArgsParse(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "apps", Annotations: map[string]string{
			webhook.AnnoPreStart:     "inline:echo start",
			webhook.AnnoPreOnline:    "inline:echo online",
			webhook.AnnoCheckURL:     "http://127.0.0.1:8080/health",
			webhook.AnnoOnlineMarker: "/berth/online/ok",
			webhook.AnnoDrain:        "5s",
			webhook.AnnoDebug:        "port",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop:1",
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"/stop"}}}}}}},
	}
	cfg, err := webhook.ParseAnnotations(pod.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	opts := webhook.DefaultOptions()
	if err := webhook.Mutate(pod, cfg, opts); err != nil {
		t.Fatal(err)
	}
	var lines [][]string
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...),
		pod.Spec.Containers...) {
		if len(c.Command) > 0 && path.Base(c.Command[0]) == "berth-hook" {
			lines = append(lines, append(c.Command[1:], c.Args...))
		} else if len(c.Command) == 0 && len(c.Args) > 0 && c.Image == opts.Image {
			lines = append(lines, c.Args)
		}
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
			if cmd := c.Lifecycle.PreStop.Exec.Command; path.Base(cmd[0]) == "berth-hook" {
				lines = append(lines, cmd[1:])
			}
		}
	}
	seen := map[string]bool{}
	for _, args := range lines {
		root := NewCommand()
		cmd, rest, err := root.Find(args)
		if err != nil || cmd == root {
			t.Fatalf("no berth-hook subcommand in %q: %v", args, err)
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		seen[cmd.Name()] = true
	}
	for _, want := range []string{"install", "prestart", "sidecar", "prestop"} {
		if !seen[want] {
			t.Errorf("the mutated pod runs no berth-hook %s (command lines %q)", want, lines)
		}
	}
}
