// Command p2p-puller is the berth node-local registry mirror that fetches image layers from peers.
package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/pkg/p2p/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "p2p-puller: %v\n", err)
		os.Exit(1)
	}
}
