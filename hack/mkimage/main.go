// Command mkimage turns a root filesystem directory into a single-layer OCI
// image and pushes it to a registry (or writes an OCI tarball), without
// Docker. hack/images.sh prepares the directories and calls it.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	rootfs := flag.String("rootfs", "", "directory to pack as the image's only layer")
	push := flag.String("push", "", "push to this reference (plain-HTTP registries allowed), "+
		"e.g. 127.0.0.1:15000/berth-dev/berth:v0.1.0")
	layoutDir := flag.String("oci-layout", "", "also write the image into this OCI layout directory")
	entrypoint := flag.String("entrypoint", "", `entrypoint as a JSON array, e.g. ["/app"]`)
	user := flag.String("user", "65532:65532", "user the image runs as")
	var labels, env multi
	flag.Var(&env, "env", "KEY=VALUE environment variable (repeatable)")
	flag.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	flag.Parse()
	if err := run(*rootfs, *push, *layoutDir, *entrypoint, *user, env, labels); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(rootfs, push, layoutDir, entrypoint, user string, env, labels []string) error {
	if rootfs == "" || (push == "" && layoutDir == "") {
		return fmt.Errorf("--rootfs and one of --push or --oci-layout are required")
	}
	data, err := tarDir(rootfs)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fmt.Errorf("make layer: %w", err)
	}
	cfg := v1.Config{User: user, WorkingDir: "/", Labels: map[string]string{},
		Env: append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)}
	if entrypoint != "" {
		if err := json.Unmarshal([]byte(entrypoint), &cfg.Entrypoint); err != nil {
			return fmt.Errorf("--entrypoint must be a JSON array: %w", err)
		}
	}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		cfg.Labels[k] = v
	}
	base := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	base, err = mutate.ConfigFile(base, &v1.ConfigFile{Architecture: "amd64", OS: "linux",
		Created: v1.Time{Time: time.Unix(0, 0)}, Config: cfg, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return fmt.Errorf("set image config: %w", err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	if layoutDir != "" {
		p, err := layout.FromPath(layoutDir)
		if err != nil {
			if p, err = layout.Write(layoutDir, empty.Index); err != nil {
				return fmt.Errorf("create OCI layout %s: %w", layoutDir, err)
			}
		}
		if err := p.AppendImage(img); err != nil {
			return fmt.Errorf("write OCI layout %s: %w", layoutDir, err)
		}
	}
	if push != "" {
		ref, err := name.ParseReference(push, name.Insecure)
		if err != nil {
			return fmt.Errorf("bad --push reference %q: %w", push, err)
		}
		if err := remote.Write(ref, img); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		d, _ := img.Digest()
		fmt.Printf("pushed %s@%s (%d MiB)\n", ref, d, len(data)>>20)
	}
	return nil
}

// tarDir packs dir with sorted names, root ownership and a fixed mtime, so the same
// inputs give the same layer digest.
func tarDir(dir string) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", dir, err)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return nil, err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("pack %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
