// Command berth-hook is the small binary the berth webhook injects into pods:
// install, prestart, sidecar (preOnline, liveness, debug proxy) and prestop.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/berth-hook/app"
)

func main() { os.Exit(cli.Run(app.NewCommand())) }
