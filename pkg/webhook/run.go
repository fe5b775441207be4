package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
)

// RunOptions are the deployment settings of the webhook server (flags of cmd/webhook).
type RunOptions struct {
	Inject Options
	// Namespace is where the webhook runs; it is never mutated.
	Namespace string
	// Host, Port and CertDir of the TLS webhook server (empty Host: all interfaces).
	Host    string
	Port    int
	CertDir string
	// DNSName overrides the certificate's name (default <ServiceName>.<Namespace>.svc).
	DNSName string
	// MetricsAddr and ProbeAddr serve /metrics and /healthz /readyz; "0" disables.
	MetricsAddr, ProbeAddr string
	// ServiceName, SecretName and WebhookConfigName name the objects the cert rotator keeps in sync.
	ServiceName, SecretName, WebhookConfigName string
	// CertRotation off means certificates are provided in CertDir by someone else (tests, cert-manager).
	CertRotation bool
	// LeaderElection guards the controllers (PreStartReporter, AfterController): one replica acts.
	LeaderElection bool
	// LeaderElectionID names the Lease in Namespace (default LeaseName).
	LeaderElectionID string
	// Reporter turns failed berth-prestart containers into Events.
	Reporter bool
	// After runs the AfterController, which removes berth.dev/after's scheduling gates.
	After bool
	// AfterWorkers is how many gated pods the AfterController handles at once.
	AfterWorkers int
	// QPS and Burst of the webhook's API client (0: client-go's defaults). Removing the gates of
	// 1,000 pods whose Service just became ready is 1,000 patches: the default 20/s would take 50 s.
	QPS   float32
	Burst int
}

// LeaseName is the default Lease of the webhook's leader election.
const LeaseName = "berth-webhook"

// Defaults of cmd/webhook's flags for the AfterController (hack/bench-webhook.sh measures them).
const (
	DefaultAfterWorkers = 16
	DefaultQPS          = 500
	DefaultBurst        = 1000
)

// Run serves the webhook until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, o RunOptions) error {
	log := klog.FromContext(ctx).WithValues("component", Name)
	if o.Namespace == "" {
		return errors.New("--namespace is required (the namespace the webhook runs in; it is never mutated)")
	}
	mgr, err := newManager(cfg, &o, log)
	if err != nil {
		return err
	}
	handler, err := NewHandler(o.Inject, []string{o.Namespace}, metrics.Registry)
	if err != nil {
		return err
	}
	if o.After {
		if err := AddAfterIndexes(ctx, mgr); err != nil {
			return err
		}
		handler.SetReadiness(&CacheReadiness{Reader: mgr.GetClient()})
	}
	certsReady := make(chan struct{})
	if err := addCertRotation(mgr, &o, certsReady); err != nil {
		return err
	}
	// The webhook server starts only once certificates exist on disk.
	go func() {
		select {
		case <-certsReady:
		case <-ctx.Done():
			return
		}
		if o.After {
			// Admission decides "already ready, no gate" from these caches: serve only once they are synced.
			for _, obj := range []client.Object{&discoveryv1.EndpointSlice{}, &corev1.Service{},
				&corev1.Namespace{}} {
				if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
					log.Error(err, "Failed to start an informer the webhook reads berth.dev/after from", "type",
						fmt.Sprintf("%T", obj))
					return
				}
			}
		}
		mgr.GetWebhookServer().Register(Path, &crwebhook.Admission{Handler: handler,
			RecoverPanic: ptr.To(true)})
		log.Info("Certificates ready, serving admission reviews", "path", Path, "port", o.Port)
	}()
	if err := addChecks(mgr, certsReady); err != nil {
		return err
	}
	if o.Reporter {
		if err := NewPreStartReporter(mgr.GetClient(),
			mgr.GetEventRecorder(Name)).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up the preStart reporter: %w", err)
		}
	}
	if o.After {
		//lint:ignore SA1019 the core/v1 recorder on purpose: see NewAfterController
		c := NewAfterController(mgr.GetClient(), mgr.GetEventRecorderFor(Name), []string{o.Namespace},
			o.AfterWorkers)
		if err := c.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("failed to set up the berth.dev/after controller: %w", err)
		}
	}
	return mgr.Start(ctx)
}

// newManager builds the manager: the API client's rate, the name-scoped list/watch of the
// rotator's objects, leader election and the caches.
func newManager(cfg *rest.Config, o *RunOptions, log klog.Logger) (manager.Manager, error) {
	cfg = rest.CopyConfig(cfg)
	if o.QPS > 0 {
		cfg.QPS, cfg.Burst = o.QPS, max(o.Burst, int(o.QPS))
	}
	if o.CertRotation {
		scopeByName(cfg, map[string]string{
			"/api/v1/namespaces/" + o.Namespace + "/secrets":                      o.SecretName,
			"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": o.WebhookConfigName,
		})
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = LeaseName
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        o.LeaderElectionID,
		LeaderElectionNamespace: o.Namespace,
		// a rolling update hands over at once, not after the lease expires
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: crwebhook.NewServer(crwebhook.Options{Host: o.Host, Port: o.Port,
			CertDir: o.CertDir}),
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				// The controllers look only at pods the webhook mutated: a small cache, even in a big cluster.
				&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{LabelInjected: "true"})},
			},
			DefaultTransform: cache.TransformStripManagedFields(),
		},
		// Run may run more than once in a process (tests run two replicas side by side).
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	return mgr, nil
}

// rotators counts the certificate rotators of this process: the rotator's controller is not the
// manager's, and its name must be unique in the process (tests run Run more than once).
var rotators atomic.Int32

func rotatorName() string {
	if n := rotators.Add(1); n > 1 {
		return fmt.Sprintf("cert-rotator-%d", n)
	}
	return "cert-rotator"
}

// addCertRotation adds the rotator and the certificate sync, which close certsReady once the
// serving certificate is on disk; without rotation, the certificates are in CertDir already.
func addCertRotation(mgr manager.Manager, o *RunOptions, certsReady chan struct{}) error {
	if !o.CertRotation {
		close(certsReady)
		return nil
	}
	if o.DNSName == "" {
		o.DNSName = fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace)
	}
	if err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
		CertDir:        o.CertDir,
		CAName:         "berth-webhook-ca",
		CAOrganization: "berth",
		DNSName:        o.DNSName,
		ExtraDNSNames:  []string{fmt.Sprintf("%s.%s.svc.cluster.local", o.ServiceName, o.Namespace)},
		IsReady:        certsReady,
		Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfigName, Type: rotator.Mutating}},
		// Every replica keeps its mounted secret in sync; the secret is the single source of truth.
		RequireLeaderElection: false,
		ControllerName:        rotatorName(),
	}); err != nil {
		return fmt.Errorf("failed to set up certificate rotation: %w", err)
	}
	sync := &certSync{reader: mgr.GetAPIReader(), dir: o.CertDir, interval: 10 * time.Second,
		secret: types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}}
	if err := mgr.Add(sync); err != nil {
		return fmt.Errorf("failed to add the certificate sync: %w", err)
	}
	return nil
}

func addChecks(mgr manager.Manager, certsReady <-chan struct{}) error {
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add healthz check: %w", err)
	}
	return mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		select {
		case <-certsReady:
			return mgr.GetWebhookServer().StartedChecker()(req)
		default:
			return errors.New("waiting for webhook certificates")
		}
	})
}

// ParseResourceList reads "cpu=10m,memory=16Mi" (the --hook-requests and --hook-limits flags).
func ParseResourceList(s string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for _, kv := range strings.Split(s, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || (k != string(corev1.ResourceCPU) && k != string(corev1.ResourceMemory) &&
			k != string(corev1.ResourceEphemeralStorage)) {
			return nil, fmt.Errorf("resource %q: want cpu=<q>, memory=<q> or ephemeral-storage=<q>, e.g. "+
				"cpu=10m,memory=16Mi", kv)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", kv, err)
		}
		out[corev1.ResourceName(k)] = q
	}
	return out, nil
}
