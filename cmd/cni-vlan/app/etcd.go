package app

import (
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/pkg/ipam"
)

// etcdOptions are the flags with which agent, reconcile and ipam find the IPAM's etcd. Their
// defaults come from $BERTH_ETCD_ENDPOINTS (comma-separated), $BERTH_ETCD_CERT, $BERTH_ETCD_KEY
// and $BERTH_ETCD_CA, which the DaemonSet sets from the cni-vlan-etcd Secret.
type etcdOptions struct {
	Etcd   ipam.EtcdConfig
	Prefix string
}

func (o *etcdOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&o.Etcd.Endpoints, "etcd-endpoints", splitEnv("BERTH_ETCD_ENDPOINTS"),
		"etcd client URLs of the IPAM")
	fs.StringVar(&o.Etcd.CertFile, "etcd-cert", os.Getenv("BERTH_ETCD_CERT"),
		"etcd client certificate file")
	fs.StringVar(&o.Etcd.KeyFile, "etcd-key", os.Getenv("BERTH_ETCD_KEY"), "etcd client key file")
	fs.StringVar(&o.Etcd.TrustedCAFile, "etcd-ca", os.Getenv("BERTH_ETCD_CA"), "etcd CA file")
	fs.StringVar(&o.Prefix, "prefix", ipam.DefaultPrefix, "etcd key prefix of the IPAM")
}

// splitEnv is a comma-separated list from the environment (nil when unset).
func splitEnv(name string) []string {
	if v := os.Getenv(name); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func hostname() string {
	h, _ := os.Hostname() // empty only on a broken host; the flag then must be set
	return h
}
