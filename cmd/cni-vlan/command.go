//go:build !cniplugin

package main

import (
	"k8s.io/component-base/cli"

	"github.com/berth-dev/berth/cmd/cni-vlan/app"
)

func runCommand() int { return cli.Run(app.NewCommand()) }
