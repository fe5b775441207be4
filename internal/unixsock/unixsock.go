// Package unixsock listens on a unix socket the way a node daemon needs when an instance can
// overlap with its successor (a container restarted, a DaemonSet rolled, a process adopted):
// the new instance replaces a stale socket, and the old one, closing, leaves the path alone once
// it belongs to the new one. A plain net.Listen("unix") listener unlinks its path on Close
// whoever owns it by then, which silently takes the socket away from the successor (for the
// kubelet's plugin registration, that unregisters the CSI driver on the node).
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// Listener is a unix socket listener that removes its path on Close only while the path is
// still its own socket.
type Listener struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

// Listen creates the socket's directory (dirMode), replaces the socket at path (a stale one of
// an earlier instance; anything else there is an error), listens, and sets the socket's mode (0
// keeps the umask's).
func Listen(path string, dirMode, mode os.FileMode) (*Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("failed to create the socket's directory: %w", err)
	}
	// Only a socket is replaced: a misconfigured path must not delete a file.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("refusing to listen on %q: it exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("failed to remove the stale socket %q: %w", path, err)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %q: %w", path, err)
	}
	ul.SetUnlinkOnClose(false)
	if mode != 0 {
		if err := os.Chmod(path, mode); err != nil {
			ul.Close()
			_ = os.Remove(path)
			return nil, fmt.Errorf("failed to chmod %q: %w", path, err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("failed to stat %q: %w", path, err)
	}
	return &Listener{UnixListener: ul, path: path, file: fi}, nil
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Owned reports whether path is still this listener's socket (not removed, not replaced).
// A file system may give a new socket the inode of one just removed: the change time tells
// them apart.
func (l *Listener) Owned() bool {
	fi, err := os.Lstat(l.path)
	return err == nil && os.SameFile(fi, l.file) && changeTime(fi) == changeTime(l.file)
}

func changeTime(fi os.FileInfo) syscall.Timespec {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ctim
	}
	return syscall.Timespec{}
}

// Close stops listening and removes the path if it is still this listener's socket.
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if l.Owned() {
		_ = os.Remove(l.path)
	}
	return err
}
