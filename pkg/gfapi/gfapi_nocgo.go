//go:build !cgo

package gfapi

import (
	"errors"
	"os"
)

// ErrNoCgo is returned by New in builds without cgo.
var ErrNoCgo = errors.New("gfapi: built without cgo (CGO_ENABLED=0); libgfapi is unavailable")

// Volume is unavailable without cgo.
type Volume struct{}

// File is unavailable without cgo.
type File struct{}

// New always fails without cgo.
func New(name, host, logFile string) (*Volume, error) { return nil, ErrNoCgo }

// Close does nothing.
func (v *Volume) Close() error { return ErrNoCgo }

// Mkdir fails.
func (v *Volume) Mkdir(string, os.FileMode) error { return ErrNoCgo }

// Rmdir fails.
func (v *Volume) Rmdir(string) error { return ErrNoCgo }

// Unlink fails.
func (v *Volume) Unlink(string) error { return ErrNoCgo }

// Statvfs fails.
func (v *Volume) Statvfs(string) (uint64, uint64, error) { return 0, 0, ErrNoCgo }

// Create fails.
func (v *Volume) Create(string, os.FileMode) (*File, error) { return nil, ErrNoCgo }

// Open fails.
func (v *Volume) Open(string, int) (*File, error) { return nil, ErrNoCgo }

// WriteAt fails.
func (f *File) WriteAt([]byte, int64) (int, error) { return 0, ErrNoCgo }

// ReadAt fails.
func (f *File) ReadAt([]byte, int64) (int, error) { return 0, ErrNoCgo }

// Close fails.
func (f *File) Close() error { return ErrNoCgo }
