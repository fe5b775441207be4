package app

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/internal/kubeclient"
	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/webhook"
)

// Options are the webhook's flags.
type Options struct {
	webhook.RunOptions
	// Requests and Limits are the --hook-requests and --hook-limits resource lists.
	Requests, Limits string
	QPS              float64
}

// NewOptions returns the defaults of every flag.
func NewOptions() *Options {
	return &Options{RunOptions: webhook.RunOptions{Inject: webhook.DefaultOptions()}}
}

// AddFlags registers the webhook's flags on fs.
func (o *Options) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Inject.Image, "hook-image", o.Inject.Image, "berth image injected into pods")
	f.StringVar(&o.Inject.HookBinary, "hook-binary", o.Inject.HookBinary,
		"path of berth-hook inside --hook-image")
	f.IntVar(&o.Inject.HealthPort, "sidecar-health-port", o.Inject.HealthPort,
		"port of the sidecar's /livez /online endpoints")
	f.StringVar(&o.Requests, "hook-requests", "cpu=10m,memory=16Mi",
		"requests of every injected container")
	f.StringVar(&o.Limits, "hook-limits", "cpu=200m,memory=64Mi",
		"limits of every injected container")
	f.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"),
		"namespace the webhook runs in (never mutated); default $POD_NAMESPACE")
	f.IntVar(&o.Port, "port", 9443, "HTTPS port of the webhook server")
	f.StringVar(&o.CertDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs",
		"directory of tls.crt and tls.key")
	f.BoolVar(&o.CertRotation, "cert-rotation", true, "create and rotate the serving certificate "+
		"and patch the caBundle (off: certificates are provided in --cert-dir)")
	f.StringVar(&o.ServiceName, "service-name", "berth-webhook",
		"Service in front of the webhook (certificate DNS name)")
	f.StringVar(&o.SecretName, "secret-name", "berth-webhook-certs",
		"Secret holding the CA and serving certificate")
	f.StringVar(&o.WebhookConfigName, "webhook-config-name", "berth-webhook",
		"MutatingWebhookConfiguration whose caBundle is patched")
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "address of /metrics (0 disables)")
	f.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081",
		"address of /healthz and /readyz")
	f.BoolVar(&o.LeaderElection, "leader-elect", true,
		"elect a leader for the controllers (preStart reporter, berth.dev/after gates)")
	f.StringVar(&o.LeaderElectionID, "leader-election-id", webhook.LeaseName,
		"Lease (in --namespace) of the leader election")
	f.BoolVar(&o.Reporter, "prestart-reporter", true, "post a pod Event when berth-prestart fails")
	f.BoolVar(&o.After, "after", true,
		"gate pods with berth.dev/after and remove the gate once their Services are ready")
	f.IntVar(&o.AfterWorkers, "after-workers", webhook.DefaultAfterWorkers,
		"gated pods handled at once when a Service becomes ready")
	f.Float64Var(&o.QPS, "kube-api-qps", webhook.DefaultQPS,
		"requests per second to the kube-apiserver (ungating 1,000 pods is 1,000 patches)")
	f.IntVar(&o.Burst, "kube-api-burst", webhook.DefaultBurst,
		"burst of requests to the kube-apiserver")
}

// Validate refuses flag values the webhook cannot run with; the errors name the flag.
func (o *Options) Validate() error {
	if _, err := webhook.ParseResourceList(o.Requests); err != nil {
		return fmt.Errorf("--hook-requests: %w", err)
	}
	if _, err := webhook.ParseResourceList(o.Limits); err != nil {
		return fmt.Errorf("--hook-limits: %w", err)
	}
	return nil
}

// Complete turns the validated flags' text into RunOptions.
func (o *Options) Complete() {
	o.Inject.Resources.Requests, _ = webhook.ParseResourceList(o.Requests)
	o.Inject.Resources.Limits, _ = webhook.ParseResourceList(o.Limits)
	o.Inject.Version = version.Version
	o.RunOptions.QPS = float32(o.QPS)
}

// NewCommand returns the webhook command.
func NewCommand() *cobra.Command { return newCommand(NewOptions()) }

func newCommand(o *Options) *cobra.Command {
	cmd := daemon.NewRootCommand("webhook",
		"berth mutating admission webhook: lifecycle hooks, shared volumes and debug-aware probes")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.Validate(); err != nil {
			return err
		}
		o.Complete()
		ctx, cancel := daemon.SignalContext()
		defer cancel()
		ctx = klog.NewContext(ctx, klog.Background())
		ctrl.SetLogger(klog.Background())
		cfg, err := kubeclient.RESTConfig("")
		if err != nil {
			return err
		}
		return webhook.Run(ctx, cfg, o.RunOptions)
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
