package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/berth-dev/berth/internal/unixsock"
)

// socketCheckInterval is how often the registrar checks that its socket is still in the
// kubelet's plugins_registry directory.
var socketCheckInterval = 5 * time.Second

// Registrar answers the kubelet's plugin watcher (the job node-driver-registrar does, which is
// not obtainable here): the kubelet finds <dir>/<driver>-reg.sock, asks GetInfo and learns
// the CSI endpoint.
//
// The kubelet keeps the driver only while that socket exists: a socket removed by anyone (an
// earlier instance of this container shutting down after its successor started, a node's boot
// cleaning the directory) unregisters the driver on the node, and every mount there then fails
// with "driver name ... not found in the list of registered CSI drivers". So the registrar
// removes the socket on shutdown only while it is still its own, puts it back when it is gone,
// and reports ready only while the kubelet has accepted the plugin and the socket is in place.
// A refusal (the kubelet could not call the CSI socket, say) is retried on a new socket.
type Registrar struct {
	registerapi.UnimplementedRegistrationServer
	// Endpoint is the CSI socket path as the kubelet sees it on the host.
	Endpoint string

	mu       sync.Mutex
	verdict  error // the kubelet's last answer; errNotYetRegistered before the first
	listener *unixsock.Listener
	refused  chan struct{} // the kubelet refused the plugin: offer a new socket after a pause
}

var errNotYetRegistered = errors.New("the kubelet has not registered the plugin yet")

var _ registerapi.RegistrationServer = &Registrar{}

// NewRegistrar returns a registrar for the CSI socket at endpoint (host path).
func NewRegistrar(endpoint string) *Registrar {
	return &Registrar{Endpoint: endpoint, verdict: errNotYetRegistered, refused: make(chan struct{}, 1)}
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
	r.mu.Lock()
	r.verdict = err
	r.mu.Unlock()
	if err != nil {
		select {
		case r.refused <- struct{}{}:
		default:
		}
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Ready reports nil while the kubelet has accepted the plugin and the registration socket is
// still the one this registrar listens on (a readiness check: the node cannot mount until then).
func (r *Registrar) Ready(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verdict != nil {
		return r.verdict
	}
	if r.listener == nil || !r.listener.Owned() {
		return errors.New("the registration socket is gone or belongs to another instance")
	}
	return nil
}

// Serve listens on <registrationDir>/<driver>-reg.sock until ctx ends. It listens on a new
// socket whenever the socket disappears from the directory (checked every socketCheckInterval)
// and, after a pause, when the kubelet refuses the plugin (the kubelet tries each socket once).
func (r *Registrar) Serve(ctx context.Context, registrationDir string) error {
	log := klog.FromContext(ctx)
	path := filepath.Join(registrationDir, Name+"-reg.sock")
	tick := time.NewTicker(socketCheckInterval)
	defer tick.Stop()
	retry := retryMin
	for {
		srv, served, err := r.listen(path)
		if err != nil {
			return err
		}
		why := ""
		for why == "" {
			select {
			case <-ctx.Done():
				// Closing removes the socket (the kubelet then deregisters the plugin) unless
				// a successor has replaced it.
				srv.GracefulStop()
				return nil
			case err := <-served:
				return fmt.Errorf("registration server on %q stopped: %w", path, err)
			case <-tick.C:
				// Gone: put it back. Replaced: another instance (this container's successor)
				// serves it; leave it alone, and take over only once it is gone.
				if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
					why = "registration socket gone"
				} else if r.Ready(ctx) == nil {
					retry = retryMin
				}
			case <-r.refused:
				// The kubelet tries a socket once (node-driver-registrar exits to get a new
				// one): a new socket after a pause makes it try again.
				r.mu.Lock()
				owned := r.listener.Owned()
				r.mu.Unlock()
				if !owned {
					continue // a successor's socket: its registrar deals with the kubelet
				}
				select {
				case <-time.After(retry):
				case <-ctx.Done():
					srv.GracefulStop()
					return nil
				}
				retry = min(2*retry, retryMax)
				why = "the kubelet refused the plugin"
			}
		}
		log.Info("listening on a new registration socket so the kubelet registers the driver",
			"reason", why, "socket", path)
		srv.Stop()
		<-served
	}
}

// After a refusal the registrar offers a new socket after retryMin, doubling up to retryMax
// while the kubelet keeps refusing.
var (
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// listen replaces whatever socket is at path (a stale one of an earlier instance) with a new
// one and serves the registration API on it.
func (r *Registrar) listen(path string) (*grpc.Server, <-chan error, error) {
	l, err := unixsock.Listen(path, 0o750, 0)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	r.listener = l
	r.verdict = errNotYetRegistered // a new socket is a new registration
	r.mu.Unlock()
	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	return srv, served, nil
}
