package balance

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestPodDemand(t *testing.T) {
	t.Parallel()
	withAnn := func(kv ...string) *v1.Pod {
		p := makePod("p", 500, 1024, "")
		for i := 0; i < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
		return p
	}
	extended := makePod("x", 100, 128, "")
	extended.Spec.Containers[0].Resources.Requests[ResourceBandwidth] = resource.MustParse("2G")
	hugeExtended := makePod("x", 100, 128, "")
	hugeExtended.Spec.Containers[0].Resources.Requests[ResourceBandwidth] = resource.MustParse("20E")

	tests := []struct {
		name    string
		pod     *v1.Pod
		want    Demand
		wantErr string
	}{
		{name: "requests only", pod: withAnn(), want: Demand{MilliCPU: 500, Memory: 1 << 30}},
		{name: "egress", pod: withAnn(AnnotationEgressBandwidth, "100M"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Network: 100e6}},
		{name: "max of ingress and egress", pod: withAnn(AnnotationIngressBandwidth, "1G",
			AnnotationEgressBandwidth, "10M"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Network: 1e9}},
		{name: "berth annotation wins", pod: withAnn(AnnotationBandwidth, "300M", AnnotationEgressBandwidth, "1G"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Network: 300e6}},
		{name: "network profile without bandwidth gets the default", pod: withAnn(AnnotationProfile, "network"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Network: 500e6, NetworkDefaulted: true, Class: ClassNetwork}},
		{name: "cpu profile override", pod: withAnn(AnnotationProfile, "cpu"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Class: ClassCPU}},
		{name: "extended resource", pod: extended,
			want: Demand{MilliCPU: 100, Memory: 128 << 20, Network: 2e9, NetworkExtended: true}},
		{name: "malformed bandwidth", pod: withAnn(AnnotationEgressBandwidth, "fast"),
			wantErr: `kubernetes.io/egress-bandwidth="fast" is not a bandwidth`},
		{name: "negative bandwidth", pod: withAnn(AnnotationBandwidth, "-5M"), wantErr: "must not be negative"},
		{name: "20E wraps int64 and is refused", pod: withAnn(AnnotationEgressBandwidth, "20E"),
			wantErr: "above the maximum of 1P bit/s"},
		{name: "1e19 is refused", pod: withAnn(AnnotationBandwidth, "1e19"),
			wantErr: "above the maximum of 1P bit/s"},
		{name: "1P is the largest accepted", pod: withAnn(AnnotationBandwidth, "1P"),
			want: Demand{MilliCPU: 500, Memory: 1 << 30, Network: 1e15}},
		{name: "extended resource of 20E is refused", pod: hugeExtended,
			wantErr: "resource request berth.dev/network-bandwidth=20E"},
		{name: "unknown profile", pod: withAnn(AnnotationProfile, "gpu"),
			wantErr: "want one of cpu, memory, network, balanced"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := podDemand(tc.pod, 500e6)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tc.want {
				t.Fatalf("demand = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNodeCapacity(t *testing.T) {
	t.Parallel()
	ext := makeNode("ext", 4, 8, "1G")
	ext.Status.Allocatable[ResourceBandwidth] = resource.MustParse("25G")
	hugeExt := makeNode("huge-ext", 4, 8, "")
	hugeExt.Status.Allocatable[ResourceBandwidth] = resource.MustParse("20E")
	label := makeNode("label", 4, 8, "")
	label.Labels = map[string]string{AnnotationBandwidth: "40G"}
	hugeLabel := makeNode("huge-label", 4, 8, "")
	hugeLabel.Labels = map[string]string{AnnotationBandwidth: "20E"}
	// 0 means "declares none": the plugin then uses defaultNodeBandwidth.
	tests := []struct {
		name    string
		node    *v1.Node
		want    int64
		wantErr bool
	}{
		{"none declared", makeNode("n", 4, 8, ""), 0, false},
		{"annotation", makeNode("n", 4, 8, "1G"), 1e9, false},
		{"label", label, 40e9, false},
		{"extended resource wins", ext, 25e9, false},
		{"malformed falls back to default", makeNode("n", 4, 8, "ten-gig"), 0, true},
		{"zero falls back to default", makeNode("n", 4, 8, "0"), 0, true},
		{"20E label (wraps int64) falls back to default", hugeLabel, 0, true},
		{"1e19 annotation falls back to default", makeNode("n", 4, 8, "1e19"), 0, true},
		{"20E allocatable falls back to default", hugeExt, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, _, err := nodeCapacity(tc.node)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("nodeCapacity = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestDeriveClass(t *testing.T) {
	t.Parallel()
	const cpu, mem, net = 8000, 32 << 30, 10e9
	tests := []struct {
		d    Demand
		want Class
	}{
		{Demand{MilliCPU: 4000, Memory: 1 << 30, Network: 1e8}, ClassCPU},
		{Demand{MilliCPU: 250, Memory: 16 << 30, Network: 1e8}, ClassMemory},
		{Demand{MilliCPU: 250, Memory: 1 << 30, Network: 4e9}, ClassNetwork},
		{Demand{MilliCPU: 1000, Memory: 4 << 30, Network: 1.25e9}, ClassBalanced},
		{Demand{MilliCPU: 4000, Class: ClassNetwork}, ClassNetwork},
	}
	for _, tc := range tests {
		if got := deriveClass(tc.d, cpu, mem, net); got != tc.want {
			t.Errorf("deriveClass(%+v) = %s, want %s", tc.d, got, tc.want)
		}
	}
}
