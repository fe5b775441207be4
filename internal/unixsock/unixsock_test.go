package unixsock

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An instance that closes after its successor replaced the socket leaves the successor's socket
// in place and reachable; the successor's own Close removes it.
func TestCloseLeavesSuccessorSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "a.sock")
	old, err := Listen(path, 0o700, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	successor, err := Listen(path, 0o700, 0)
	if err != nil {
		t.Fatal(err)
	}
	if old.Owned() || !successor.Owned() {
		t.Fatalf("owned: old %v, successor %v", old.Owned(), successor.Owned())
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := successor.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the successor's socket is unreachable after the old instance closed: %v", err)
	}
	c.Close()
	if err := successor.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after its owner closed: %v", err)
	}
}

// A path that holds something other than a socket (a misconfigured flag) is refused with a clear
// error and left as it was.
func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(path, 0o700, 0)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v, want a not-a-socket error", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Fatalf("the file was changed: %q %v", b, err)
	}
}
