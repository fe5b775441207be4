// Command scheduler-plugin is the kube-scheduler with the berth BerthBalance plugin, which
// balances CPU-, memory- and network-heavy pods. See docs/scheduler.md.
package main

import (
	"os"

	"github.com/berth-dev/berth/pkg/scheduler"
)

func main() {
	os.Exit(scheduler.Main(os.Args[1:], os.Stdout))
}
