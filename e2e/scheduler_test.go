//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestBerthScheduler: with manifests/scheduler installed, pods that name berth-scheduler are
// scheduled by it (the Scheduled event comes from berth-scheduler) and run; a pod with a
// malformed bandwidth annotation is still scheduled (neutral score); a pod asking more
// bandwidth than any node has stays Pending with the BerthBalance reason.
func TestBerthScheduler(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("scheduler")

	tests := []struct {
		name, annotation, value string
		wantScheduled           bool
	}{
		{"network-heavy", "kubernetes.io/egress-bandwidth", "100M", true},
		{"profile-override", "berth.dev/profile", "network", true},
		{"malformed", "kubernetes.io/ingress-bandwidth", "lots", true},
		{"too-much-bandwidth", "berth.dev/network-bandwidth", "100T", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{
					Name:        tc.name,
					Namespace:   f.Namespace,
					Annotations: map[string]string{tc.annotation: tc.value},
				},
				Spec: corev1.PodSpec{
					SchedulerName: "berth-scheduler",
					Containers: []corev1.Container{{
						Name: "app", Image: framework.Image("berth"),
						Command: []string{"/usr/local/bin/scheduler-plugin", "--version"},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("10m"),
							corev1.ResourceMemory: resource.MustParse("16Mi"),
						}},
					}},
					RestartPolicy: corev1.RestartPolicyNever,
				},
			}
			if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), pod, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create pod %s: %v", tc.name, err)
			}
			if tc.wantScheduled {
				f.WaitFor("pod "+tc.name+" scheduled by berth-scheduler", 2*time.Minute, func(ctx context.Context) (bool, error) {
					return scheduledBy(ctx, f, tc.name, "berth-scheduler")
				})
				return
			}
			f.WaitFor("pod "+tc.name+" unschedulable for bandwidth", 2*time.Minute, func(ctx context.Context) (bool, error) {
				p, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, tc.name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				if p.Spec.NodeName != "" {
					return false, fmt.Errorf("pod was bound to %s", p.Spec.NodeName)
				}
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonUnschedulable {
						return strings.Contains(c.Message, "network bandwidth"), nil
					}
				}
				return false, nil
			})
		})
	}
}

// scheduledBy reports whether pod has a Scheduled event reported by scheduler.
func scheduledBy(ctx context.Context, f *framework.Framework, pod, scheduler string) (bool, error) {
	evs, err := f.Client.CoreV1().Events(f.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + pod + ",reason=Scheduled"})
	if err != nil {
		return false, err
	}
	for _, e := range evs.Items {
		if e.ReportingController == scheduler || e.Source.Component == scheduler {
			return true, nil
		}
	}
	return false, nil
}
