// Command coredns is the local cluster's DNS server: CoreDNS with only the
// plugins a cluster needs, so that it builds quickly from the module proxy
// (the full plugin set pulls in every cloud provider's SDK).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives is CoreDNS's plugin order (core/dnsserver/zdirectives.go), reduced to the plugins above.
var directives = []string{"reload", "health", "ready", "errors", "log", "loadbalance", "cache", "loop",
	"kubernetes", "forward"}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
