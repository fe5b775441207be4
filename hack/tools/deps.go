//go:build tools

// Package tools pins the modules berth's components are built on, so that
// `go mod tidy` keeps them at the versions chosen in go.mod even while a
// component does not import them yet. All k8s.io modules follow one minor
// (v1.35 / v0.35) through the replace block in go.mod.
package tools

import (
	_ "github.com/cilium/ebpf"
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/distribution/distribution/v3/registry"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "github.com/open-policy-agent/cert-controller/pkg/rotator"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/vishvananda/netlink"
	_ "go.etcd.io/etcd/client/v3"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/time/rate"
	_ "gomodules.xyz/jsonpatch/v2"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "sigs.k8s.io/controller-runtime"
	_ "sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)
