// Command fusecheck does what the GlusterFS FUSE client does to mount a volume: open /dev/fuse
// and mount a FUSE filesystem on /mnt with it. TestUnprivilegedFUSE runs it in a container.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR, 0)
	if err != nil {
		fmt.Println("open /dev/fuse:", err)
		os.Exit(1)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("fusecheck", "/mnt", "fuse.fusecheck", 0, opts); err != nil {
		fmt.Println("mount:", err)
		os.Exit(1)
	}
	_ = unix.Unmount("/mnt", unix.MNT_DETACH)
	fmt.Println("mounted")
}
