package ipam

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name, conf, wantErr, wantPool string
	}{
		{"inline pool names the pool", `{"ipam":{"etcd":{"endpoints":["http://127.0.0.1:2379"]},` +
			`"poolSpec":{"name":"v100","vlan":100,"subnet":"10.1.0.0/24"}}}`, "", "v100"},
		{"bare ipam object", `{"etcd":{"endpoints":["https://e:2379"]},"pool":"v200"}`, "", "v200"},
		{"no endpoints", `{"ipam":{"pool":"p"}}`, "etcd.endpoints", ""},
		{"bad endpoint", `{"ipam":{"etcd":{"endpoints":["127.0.0.1:2379"]},"pool":"p"}}`,
			"http(s)://host:port", ""},
		{"cert without key", `{"ipam":{"etcd":{"endpoints":["https://e:2379"],"certFile":"/x"},` +
			`"pool":"p"}}`, "go together", ""},
		{"no pool", `{"ipam":{"etcd":{"endpoints":["http://e:2379"]}}}`, `"pool" is required`, ""},
		{"pool mismatch", `{"ipam":{"etcd":{"endpoints":["http://e:2379"]},"pool":"a",` +
			`"poolSpec":{"name":"b","subnet":"10.0.0.0/24"}}}`, "must match", ""},
		{"bad inline pool", `{"ipam":{"etcd":{"endpoints":["http://e:2379"]},"poolSpec":{"name":"b",` +
			`"subnet":"10.0.0.7/24"}}}`, "did you mean 10.0.0.0/24", ""},
		{"bad fixed entry", `{"ipam":{"etcd":{"endpoints":["http://e:2379"]},"pool":"p",` +
			`"fixedIPStatefulSets":["db"]}}`, "namespace/statefulset", ""},
		{"not json", `{`, "failed to parse", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig([]byte(tc.conf))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Pool != tc.wantPool {
				t.Fatalf("pool %q, want %q", c.Pool, tc.wantPool)
			}
		})
	}
}

// A missing TLS file is "try again later" (the Secret may not be installed
// yet), never a config error that would fail a DEL for good.
func TestOpenWithMissingTLSFileIsRetryable(t *testing.T) {
	c, err := LoadConfig([]byte(`{"ipam":{"etcd":{"endpoints":["https://e:2379"],` +
		`"trustedCAFile":"/nonexistent/ca.crt"},"pool":"p"}}`))
	if err != nil {
		t.Fatalf("LoadConfig must not fail on a missing TLS file: %v", err)
	}
	_, _, err = c.Open(t.Context())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "/nonexistent/ca.crt") {
		t.Fatalf("want ErrUnavailable naming the file, got %v", err)
	}
	var te *types.Error
	if !errors.As(CNIError(err), &te) || te.Code != types.ErrTryAgainLater {
		t.Fatalf("CNI error %v, want code %d", CNIError(err), types.ErrTryAgainLater)
	}
}

func TestWithFixed(t *testing.T) {
	c := &Config{FixedIPStatefulSets: []string{"db/pg", "cache/*"}}
	for pod, want := range map[string]bool{"db/pg-0": true, "db/pg-12": true, "db/pg-x": false,
		"db/pgbouncer-0": false,
		"db/pg":          false, "cache/anything": true, "other/pg-0": false} {
		ns, name, _ := strings.Cut(pod, "/")
		if got := c.WithFixed(Handle{PodNamespace: ns, PodName: name}).Fixed; got != want {
			t.Errorf("%s: fixed=%v, want %v", pod, got, want)
		}
	}
}

func TestHandleFromCNI(t *testing.T) {
	h, err := HandleFromCNI("abc", "eth0", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;"+
		"K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=abc", "net", "node1")
	if err != nil {
		t.Fatal(err)
	}
	if h.PodNamespace != "ns" || h.PodName != "web-0" || h.PodUID != "u-1" || h.Node != "node1" ||
		h.Network != "net" || h.Key() != "abc/eth0" {
		t.Fatalf("handle %+v", h)
	}
	if _, err := HandleFromCNI("", "eth0", "", "net", "n"); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("empty container ID: %v", err)
	}
}

func TestCNIError(t *testing.T) {
	for err, code := range map[error]uint{
		ErrTryAgain: types.ErrTryAgainLater, ErrUnavailable: types.ErrTryAgainLater,
		ErrExhausted:   CodeExhausted,
		ErrInvalidPool: types.ErrInvalidNetworkConfig, ErrPoolNotFound: types.ErrInvalidNetworkConfig,
		errors.New("x"): types.ErrInternal,
	} {
		var te *types.Error
		if !errors.As(CNIError(err), &te) || te.Code != code {
			t.Errorf("%v: code %v, want %d", err, te, code)
		}
	}
	var te *types.Error
	if !errors.As(CNIStatusError(ErrExhausted), &te) || te.Code != types.ErrPluginNotAvailable {
		t.Fatalf("status: %v", te)
	}
	if CNIError(nil) != nil || CNIStatusError(nil) != nil {
		t.Fatal("nil must map to nil")
	}
}

func TestResult(t *testing.T) {
	p := Pool{Name: "a", Subnet: mustPrefix("10.0.0.0/24")}
	l, err := newLayout(&p)
	if err != nil {
		t.Fatal(err)
	}
	res := l.allocation(l.nth(0), record{}).Result()
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.0.0.2/24" ||
		res.IPs[0].Gateway.String() != "10.0.0.1" {
		t.Fatalf("IPs %+v", res.IPs[0])
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" ||
		res.Routes[0].GW.String() != "10.0.0.1" {
		t.Fatalf("routes %+v", res.Routes)
	}
}

// TestCheckNode: one config file copied to every node must not name one of
// them: the other nodes refuse it instead of collecting its live addresses.
func TestCheckNode(t *testing.T) {
	t.Setenv("NODE_NAME", "worker-2")
	for _, tc := range []struct {
		node string
		ok   bool
	}{{"", true}, {"worker-2", true}, {"Worker-2", true}, {"worker-1", false}} {
		err := (&Config{NodeName: tc.node}).CheckNode()
		if (err == nil) != tc.ok {
			t.Errorf("nodeName %q on worker-2: got %v, want ok=%v", tc.node, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "leave \"nodeName\" out") {
			t.Errorf("nodeName %q: error %q does not say how to fix it", tc.node, err)
		}
	}
}
