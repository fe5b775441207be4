// Package version holds the berth version stamped at build time.
package version

import (
	"fmt"
	"runtime"
)

// Version is set with -ldflags "-X github.com/berth-dev/berth/internal/version.Version=v0.1.0".
var Version = "v0.0.0-dev"

// String returns the version line every berth binary prints for --version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)", binary, Version, runtime.Version(), runtime.GOOS,
		runtime.GOARCH)
}
