package hook

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies the running binary to dst (mode 0755) so that containers
// running other images can execute it from a shared volume. The copy is
// written next to dst and renamed, so a half-written binary is never run.
func Install(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("failed to find the running binary: %w", err)
	}
	return copyExecutable(self, dst)
}

func copyExecutable(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("failed to open %q: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".berth-hook-*")
	if err != nil {
		return fmt.Errorf("failed to create a file next to %q: %w", dst, err)
	}
	success := false
	defer func() {
		if !success {
			_ = os.Remove(tmp.Name()) // rollback of a partial copy
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("failed to copy %q to %q: %w", src, tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("failed to make %q executable: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %q: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("failed to move %q to %q: %w", tmp.Name(), dst, err)
	}
	success = true
	return nil
}
