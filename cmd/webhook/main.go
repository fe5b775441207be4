// Command webhook is the berth mutating admission webhook: lifecycle hooks, shared volumes and
// debug-aware probes.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/webhook/app"
)

func main() { os.Exit(cli.Run(app.NewCommand())) }
