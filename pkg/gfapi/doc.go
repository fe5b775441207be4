// Package gfapi is berth's own small cgo binding to libgfapi (GlusterFS's user-space client
// library, pkg-config glusterfs-api; Debian libglusterfs-dev to build, libgfapi0 to run),
// since gogfapi is not obtainable. It covers what the CSI driver and its benchmark need:
// connect to a volume, make and remove directories, create, read and write files, statvfs.
//
// Without cgo the package builds but New returns ErrNoCgo, so `go vet` and unit tests of
// other packages do not need a C toolchain.
//
// glfs_fini takes ~10 s in GlusterFS 10: keep one Volume per GlusterFS volume open.
package gfapi
