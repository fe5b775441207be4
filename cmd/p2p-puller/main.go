// Command p2p-puller is the berth node-local registry mirror that fetches image layers from peers.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/p2p-puller/app"
)

func main() { os.Exit(cli.Run(app.NewCommand())) }
