package iolayer

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// confinedRoot keeps every path operation of the IO layer inside the volume. go-fuse's
// loopback nodes resolve joined host paths, so a tenant who swaps a directory for a symlink
// (from another node, or before the layer existed) would make this root daemon follow it to
// host files. Here each directory is opened with openat2(RESOLVE_IN_ROOT) from a descriptor
// of the volume root (symlinks and ".." resolve inside the volume), and the last component
// is used below /proc/self/fd/<dir fd> with the no-follow form of each call.
type confinedRoot struct {
	fd  int // O_PATH descriptor of the volume's source directory
	dev uint64
}

func openConfinedRoot(source string) (*confinedRoot, error) {
	fd, err := unix.Open(source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: source, Err: err}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: source, Err: err}
	}
	return &confinedRoot{fd: fd, dev: st.Dev}, nil
}

func (r *confinedRoot) close() { unix.Close(r.fd) }

// openDir opens directory rel (relative to the root) as an O_PATH descriptor.
func (r *confinedRoot) openDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(r.fd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// at is a confined directory and a name in it; path is safe for calls that do not follow
// the last component.
type at struct {
	dir  int
	name string
}

func (a at) path() string {
	if a.name == "" {
		return fdPath(a.dir)
	}
	return fdPath(a.dir) + "/" + a.name
}

func (a at) close() { unix.Close(a.dir) }

// child is name in directory node n.
func (n *limitedNode) child(name string) (at, syscall.Errno) {
	fd, err := n.croot.openDir(n.Path(n.Root()))
	if err != nil {
		return at{}, fs.ToErrno(err)
	}
	return at{dir: fd, name: name}, 0
}

// self is node n as a name in its parent directory; the root is its own directory with no name.
func (n *limitedNode) self() (at, syscall.Errno) {
	name, parent := n.Parent()
	if parent == nil {
		if &n.Inode != n.Root() {
			return at{}, syscall.ENOENT // unlinked
		}
		fd, err := n.croot.openDir("")
		return at{dir: fd}, fs.ToErrno(err)
	}
	fd, err := n.croot.openDir(parent.Path(n.Root()))
	if err != nil {
		return at{}, fs.ToErrno(err)
	}
	return at{dir: fd, name: name}, 0
}

func (n *limitedNode) newChild(ctx context.Context, name string, st *syscall.Stat_t,
	out *fuse.EntryOut) *fs.Inode {
	out.Attr.FromStat(st)
	node := &limitedNode{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, lim: n.lim,
		croot: n.croot}
	swapped := (st.Dev << 32) | (st.Dev >> 32)
	rootDev := (n.croot.dev << 32) | (n.croot.dev >> 32)
	ino := (swapped ^ rootDev) ^ st.Ino
	return n.NewInode(ctx, node, fs.StableAttr{Mode: st.Mode, Gen: 1, Ino: ino})
}

// preserveOwner gives a new entry the caller's uid and gid, as the loopback does.
func preserveOwner(ctx context.Context, a at) {
	if caller, ok := fuse.FromContext(ctx); ok && os.Getuid() == 0 {
		_ = unix.Fchownat(a.dir, a.name, int(caller.Uid), int(caller.Gid), unix.AT_SYMLINK_NOFOLLOW)
	}
}

// made stats a just-created entry and returns its inode; on failure the entry is removed.
func (n *limitedNode) made(ctx context.Context, a at, out *fuse.EntryOut,
	rmFlags int) (*fs.Inode, syscall.Errno) {
	preserveOwner(ctx, a)
	var st syscall.Stat_t
	if err := fstatat(a.dir, a.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		_ = unix.Unlinkat(a.dir, a.name, rmFlags)
		return nil, fs.ToErrno(err)
	}
	return n.newChild(ctx, a.name, &st, out), 0
}

var (
	_ fs.NodeLookuper       = &limitedNode{}
	_ fs.NodeMkdirer        = &limitedNode{}
	_ fs.NodeMknoder        = &limitedNode{}
	_ fs.NodeSymlinker      = &limitedNode{}
	_ fs.NodeLinker         = &limitedNode{}
	_ fs.NodeUnlinker       = &limitedNode{}
	_ fs.NodeRmdirer        = &limitedNode{}
	_ fs.NodeRenamer        = &limitedNode{}
	_ fs.NodeReadlinker     = &limitedNode{}
	_ fs.NodeGetattrer      = &limitedNode{}
	_ fs.NodeSetattrer      = &limitedNode{}
	_ fs.NodeStatxer        = &limitedNode{}
	_ fs.NodeStatfser       = &limitedNode{}
	_ fs.NodeGetxattrer     = &limitedNode{}
	_ fs.NodeSetxattrer     = &limitedNode{}
	_ fs.NodeRemovexattrer  = &limitedNode{}
	_ fs.NodeListxattrer    = &limitedNode{}
	_ fs.NodeOpendirHandler = &limitedNode{}
	_ fs.NodeReaddirer      = &limitedNode{}
	_ fs.NodeTmpfiler       = &limitedNode{}
)

func (n *limitedNode) Lookup(ctx context.Context, name string,
	out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, errno := n.child(name)
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	var st syscall.Stat_t
	if err := fstatat(a.dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.newChild(ctx, name, &st, out), 0
}

func (n *limitedNode) Mkdir(ctx context.Context, name string, mode uint32,
	out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, errno := n.child(name)
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	if err := unix.Mkdirat(a.dir, name, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, a, out, unix.AT_REMOVEDIR)
}

func (n *limitedNode) Mknod(ctx context.Context, name string, mode, rdev uint32,
	out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, errno := n.child(name)
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	if err := unix.Mknodat(a.dir, name, mode, int(rdev)); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, a, out, 0)
}

func (n *limitedNode) Symlink(ctx context.Context, target, name string,
	out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	a, errno := n.child(name)
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	if err := unix.Symlinkat(target, a.dir, name); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, a, out, 0)
}

func (n *limitedNode) Link(ctx context.Context, target fs.InodeEmbedder, name string,
	out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*limitedNode)
	if !ok || t.croot != n.croot {
		return nil, syscall.EXDEV
	}
	src, errno := t.self()
	if errno != 0 {
		return nil, errno
	}
	defer src.close()
	if src.name == "" {
		return nil, syscall.EPERM // the root
	}
	a, errno := n.child(name)
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	if err := unix.Linkat(src.dir, src.name, a.dir, name, 0); err != nil {
		return nil, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := fstatat(a.dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.newChild(ctx, name, &st, out), 0
}

func (n *limitedNode) Unlink(_ context.Context, name string) syscall.Errno {
	a, errno := n.child(name)
	if errno != 0 {
		return errno
	}
	defer a.close()
	return fs.ToErrno(unix.Unlinkat(a.dir, name, 0))
}

func (n *limitedNode) Rmdir(_ context.Context, name string) syscall.Errno {
	a, errno := n.child(name)
	if errno != 0 {
		return errno
	}
	defer a.close()
	return fs.ToErrno(unix.Unlinkat(a.dir, name, unix.AT_REMOVEDIR))
}

func (n *limitedNode) Rename(_ context.Context, name string, newParent fs.InodeEmbedder,
	newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*limitedNode)
	if !ok || np.croot != n.croot {
		return syscall.EXDEV
	}
	a, errno := n.child(name)
	if errno != 0 {
		return errno
	}
	defer a.close()
	b, errno := np.child(newName)
	if errno != 0 {
		return errno
	}
	defer b.close()
	return fs.ToErrno(unix.Renameat2(a.dir, name, b.dir, newName, uint(flags)))
}

func (n *limitedNode) Create(ctx context.Context, name string, flags, mode uint32,
	out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	a, errno := n.child(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer a.close()
	// O_NOFOLLOW: O_CREAT alone would follow a dangling symlink and create its target.
	// O_APPEND kept: appendFlags
	fd, err := unix.Openat(a.dir, name, int(flags)|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	preserveOwner(ctx, a)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	return n.newChild(ctx, name, &st, out), n.wrap(fs.NewLoopbackFile(fd)), appendFlags(flags), 0
}

// Tmpfile is refused: an O_TMPFILE file has no name to confine later operations by.
func (n *limitedNode) Tmpfile(context.Context, uint32, uint32,
	*fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

func (n *limitedNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	a, errno := n.self()
	if errno != 0 {
		return nil, errno
	}
	defer a.close()
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := unix.Readlinkat(a.dir, a.name, buf)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
	}
}

// stat of the node itself: the root follows (it is the volume directory), others do not.
func (n *limitedNode) stat(st *syscall.Stat_t) syscall.Errno {
	a, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer a.close()
	if a.name == "" {
		return fs.ToErrno(syscall.Fstat(a.dir, st))
	}
	return fs.ToErrno(fstatat(a.dir, a.name, st, unix.AT_SYMLINK_NOFOLLOW))
}

func (n *limitedNode) Getattr(ctx context.Context, f fs.FileHandle,
	out *fuse.AttrOut) syscall.Errno {
	if fga, ok := f.(fs.FileGetattrer); ok && fga != nil {
		return fga.Getattr(ctx, out)
	}
	var st syscall.Stat_t
	if errno := n.stat(&st); errno != 0 {
		return errno
	}
	out.FromStat(&st)
	return 0
}

func (n *limitedNode) Statx(ctx context.Context, f fs.FileHandle, flags, mask uint32,
	out *fuse.StatxOut) syscall.Errno {
	if fsx, ok := f.(fs.FileStatxer); ok && fsx != nil {
		return fsx.Statx(ctx, flags, mask, out)
	}
	a, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer a.close()
	fl := int(flags) | unix.AT_SYMLINK_NOFOLLOW
	if a.name == "" {
		fl |= unix.AT_EMPTY_PATH
	}
	var st unix.Statx_t
	if err := unix.Statx(a.dir, a.name, fl, int(mask), &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatx(&st)
	return 0
}

func (n *limitedNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(fdPath(n.croot.fd), &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// Setattr without an open file works on a descriptor of the node itself (O_PATH|O_NOFOLLOW),
// so mode and size changes reach the node, never what a symlink points at.
func (n *limitedNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn,
	out *fuse.AttrOut) syscall.Errno {
	if fsa, ok := f.(fs.FileSetattrer); ok && fsa != nil {
		return n.LoopbackNode.Setattr(ctx, f, in, out) // descriptor based
	}
	a, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer a.close()
	fd := a.dir
	if a.name != "" {
		var err error
		if fd, err = unix.Openat(a.dir, a.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC,
			0); err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(fd)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if m, ok := in.GetMode(); ok {
		if isLink {
			return syscall.EOPNOTSUPP // as Linux: symlinks have no mode of their own
		}
		if err := unix.Chmod(fdPath(fd), m); err != nil {
			return fs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		suid, sgid := -1, -1
		if uok {
			suid = int(uid)
		}
		if gok {
			sgid = int(gid)
		}
		if err := unix.Fchownat(fd, "", suid, sgid, unix.AT_EMPTY_PATH); err != nil {
			return fs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if isLink {
			return syscall.EINVAL
		}
		if err := unix.Truncate(fdPath(fd), int64(sz)); err != nil {
			return fs.ToErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		dir, name, fl := a.dir, a.name, unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			dir, name, fl = unix.AT_FDCWD, fdPath(a.dir), 0
		}
		if err := unix.UtimesNanoAt(dir, name, ts, fl); err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := syscall.Fstat(fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// Extended attributes use the l* calls on <dir fd>/<name>: the last component is not followed.
func (n *limitedNode) Getxattr(_ context.Context, attr string,
	dest []byte) (uint32, syscall.Errno) {
	a, errno := n.self()
	if errno != 0 {
		return 0, errno
	}
	defer a.close()
	sz, err := unix.Lgetxattr(a.path(), attr, dest)
	return uint32(sz), fs.ToErrno(err)
}

func (n *limitedNode) Setxattr(_ context.Context, attr string, data []byte,
	flags uint32) syscall.Errno {
	a, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer a.close()
	return fs.ToErrno(unix.Lsetxattr(a.path(), attr, data, int(flags)))
}

func (n *limitedNode) Removexattr(_ context.Context, attr string) syscall.Errno {
	a, errno := n.self()
	if errno != 0 {
		return errno
	}
	defer a.close()
	return fs.ToErrno(unix.Lremovexattr(a.path(), attr))
}

func (n *limitedNode) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	a, errno := n.self()
	if errno != 0 {
		return 0, errno
	}
	defer a.close()
	sz, err := unix.Llistxattr(a.path(), dest)
	return uint32(sz), fs.ToErrno(err)
}

// openDirStream opens the node's directory for reading through the confined descriptor.
func (n *limitedNode) openDirStream() (fs.DirStream, syscall.Errno) {
	dfd, err := n.croot.openDir(n.Path(n.Root()))
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

func (n *limitedNode) OpendirHandle(context.Context, uint32) (
	fs.FileHandle, uint32, syscall.Errno) {
	ds, errno := n.openDirStream()
	if errno != 0 {
		return nil, 0, errno
	}
	fh, ok := ds.(fs.FileHandle)
	if !ok {
		ds.Close()
		return nil, 0, syscall.ENOTSUP
	}
	return fh, 0, 0
}

func (n *limitedNode) Readdir(context.Context) (fs.DirStream, syscall.Errno) {
	return n.openDirStream()
}

// fstatat fills a syscall.Stat_t (what go-fuse's FromStat takes); x/sys/unix's Stat_t has
// the same layout on Linux.
func fstatat(dir int, name string, st *syscall.Stat_t, flags int) error {
	return unix.Fstatat(dir, name, (*unix.Stat_t)(unsafe.Pointer(st)), flags)
}
