// Command scheduler-plugin is the kube-scheduler with the berth BerthBalance plugin, which
// balances CPU-, memory- and network-heavy pods. See docs/scheduler.md.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/scheduler-plugin/app"
)

func main() { os.Exit(cli.Run(app.NewCommand())) }
