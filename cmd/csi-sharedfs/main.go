// Command csi-sharedfs is the berth CSI driver for GlusterFS SharedStorage with capacity and
// IO quotas. Its wiring is in package app, its logic in pkg/csi.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/csi-sharedfs/app"
)

func main() { os.Exit(cli.Run(app.NewCommand())) }
