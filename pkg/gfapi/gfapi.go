//go:build cgo

package gfapi

/*
#cgo pkg-config: glusterfs-api
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <glusterfs/api/glfs.h>
*/
import "C"

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// Volume is one initialized libgfapi connection ("virtual mount") to a GlusterFS volume.
type Volume struct {
	name string
	fs   *C.glfs_t
}

// File is an open file on a Volume.
type File struct {
	fd   *C.glfs_fd_t
	path string
}

// New connects to volume name through the volfile server host:24007 and logs to logFile
// ("" = /dev/null). It blocks until the client graph is up (glfs_init).
func New(name, host, logFile string) (*Volume, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	fs := C.glfs_new(cname)
	if fs == nil {
		return nil, fmt.Errorf("glfs_new(%q) failed", name)
	}
	v := &Volume{name: name, fs: fs}
	tcp, chost := C.CString("tcp"), C.CString(host)
	defer C.free(unsafe.Pointer(tcp))
	defer C.free(unsafe.Pointer(chost))
	if r, err := C.glfs_set_volfile_server(fs, tcp, chost, 24007); r != 0 {
		C.glfs_fini(fs)
		return nil, fmt.Errorf("glfs_set_volfile_server(%q): %w", host, err)
	}
	if logFile == "" {
		logFile = "/dev/null"
	}
	clog := C.CString(logFile)
	defer C.free(unsafe.Pointer(clog))
	C.glfs_set_logging(fs, clog, 3) // warnings and errors
	if r, err := C.glfs_init(fs); r != 0 {
		C.glfs_fini(fs)
		return nil, fmt.Errorf("glfs_init of volume %q from %s: %w", name, host, err)
	}
	return v, nil
}

// Close tears the connection down (slow: ~10 s in GlusterFS 10).
func (v *Volume) Close() error {
	if r, err := C.glfs_fini(v.fs); r != 0 {
		return fmt.Errorf("glfs_fini of %q: %w", v.name, err)
	}
	return nil
}

func pathErr(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}

// Mkdir makes directory path (relative to the volume root, with a leading "/").
func (v *Volume) Mkdir(path string, mode os.FileMode) error {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	if r, err := C.glfs_mkdir(v.fs, c, C.mode_t(mode.Perm())); r != 0 {
		return pathErr("mkdir", path, err)
	}
	return nil
}

// Rmdir removes the empty directory path.
func (v *Volume) Rmdir(path string) error {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	if r, err := C.glfs_rmdir(v.fs, c); r != 0 {
		return pathErr("rmdir", path, err)
	}
	return nil
}

// Unlink removes file path.
func (v *Volume) Unlink(path string) error {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	if r, err := C.glfs_unlink(v.fs, c); r != 0 {
		return pathErr("unlink", path, err)
	}
	return nil
}

// Statvfs returns total and available bytes of the filesystem holding path (with
// quota-deem-statfs on, of its quota).
func (v *Volume) Statvfs(path string) (total, avail uint64, err error) {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	var st C.struct_statvfs
	if r, err := C.glfs_statvfs(v.fs, c, &st); r != 0 {
		return 0, 0, pathErr("statvfs", path, err)
	}
	return uint64(st.f_blocks) * uint64(st.f_frsize), uint64(st.f_bavail) * uint64(st.f_frsize), nil
}

// Create creates (or truncates) path for writing.
func (v *Volume) Create(path string, mode os.FileMode) (*File, error) {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	fd, err := C.glfs_creat(v.fs, c, C.O_RDWR|C.O_TRUNC, C.mode_t(mode.Perm()))
	if fd == nil {
		return nil, pathErr("create", path, err)
	}
	return &File{fd: fd, path: path}, nil
}

// Open opens path with os flags (os.O_RDONLY, os.O_RDWR, ...).
func (v *Volume) Open(path string, flags int) (*File, error) {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	fd, err := C.glfs_open(v.fs, c, C.int(flags))
	if fd == nil {
		return nil, pathErr("open", path, err)
	}
	return &File{fd: fd, path: path}, nil
}

// WriteAt writes b at off. EDQUOT may surface on a later write (write-behind).
func (f *File) WriteAt(b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, err := C.glfs_pwrite(f.fd, unsafe.Pointer(&b[0]), C.size_t(len(b)), C.off_t(off), 0, nil, nil)
	if n < 0 {
		return 0, pathErr("write", f.path, err)
	}
	return int(n), nil
}

// ReadAt reads into b from off; it returns 0, nil at end of file.
func (f *File) ReadAt(b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, err := C.glfs_pread(f.fd, unsafe.Pointer(&b[0]), C.size_t(len(b)), C.off_t(off), 0, nil)
	if n < 0 {
		return 0, pathErr("read", f.path, err)
	}
	return int(n), nil
}

// Close closes the file; a deferred write error (such as EDQUOT) can show up here.
func (f *File) Close() error {
	if r, err := C.glfs_close(f.fd); r != 0 {
		return pathErr("close", f.path, err)
	}
	return nil
}

var _ = syscall.EDQUOT // errors come back as syscall.Errno: errors.Is(err, syscall.EDQUOT)
