package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Registrar answers the kubelet's plugin watcher (the job node-driver-registrar does, which is
// not obtainable here): the kubelet finds <dir>/<driver>-reg.sock, asks GetInfo and learns
// the CSI endpoint.
type Registrar struct {
	registerapi.UnimplementedRegistrationServer
	// Endpoint is the CSI socket path as the kubelet sees it on the host.
	Endpoint string
	// registered receives each status the kubelet sends.
	registered chan error
}

var _ registerapi.RegistrationServer = &Registrar{}

// NewRegistrar returns a registrar for the CSI socket at endpoint (host path).
func NewRegistrar(endpoint string) *Registrar {
	return &Registrar{Endpoint: endpoint, registered: make(chan error, 1)}
}

// GetInfo tells the kubelet what this plugin is and where its CSI socket is.
func (r *Registrar) GetInfo(context.Context, *registerapi.InfoRequest) (
	*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type: registerapi.CSIPlugin, Name: Name, Endpoint: r.Endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus records whether the kubelet accepted the plugin.
func (r *Registrar) NotifyRegistrationStatus(ctx context.Context,
	s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	var err error
	if !s.PluginRegistered {
		err = fmt.Errorf("kubelet refused the plugin: %s", s.Error)
		klog.FromContext(ctx).Error(err, "plugin registration failed")
	} else {
		klog.FromContext(ctx).Info("registered with the kubelet", "driver", Name)
	}
	select {
	case r.registered <- err:
	default:
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Registered returns the channel that receives the kubelet's registration verdicts.
func (r *Registrar) Registered() <-chan error { return r.registered }

// Serve listens on <registrationDir>/<driver>-reg.sock until ctx ends.
func (r *Registrar) Serve(ctx context.Context, registrationDir string) error {
	path := filepath.Join(registrationDir, Name+"-reg.sock")
	if err := os.MkdirAll(registrationDir, 0o750); err != nil {
		return fmt.Errorf("failed to create %q: %w", registrationDir, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove stale %q: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("failed to listen on %q: %w", path, err)
	}
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
		_ = os.Remove(path) // the kubelet deregisters the plugin when the socket goes
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("registration server on %q: %w", path, err)
	}
	return nil
}
