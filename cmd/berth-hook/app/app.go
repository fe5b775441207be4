package app

import (
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/hook"
)

// NewCommand returns the berth-hook command with its subcommands.
func NewCommand() *cobra.Command {
	root := daemon.NewRootCommand("berth-hook",
		"berth's in-pod hook runner: preStart, preOnline, debug proxy, preStop")
	root.PersistentPreRun = func(cmd *cobra.Command, args []string) {
		daemon.ContextualLogging(cmd, args)
		// berth-hook's log and the hook scripts' output share stdout, so kubectl logs
		// shows them in the order they happened (the runtime does not order lines across
		// stdout and stderr).
		if !cmd.Flags().Changed("logtostderr") {
			klog.LogToStderr(false)
			klog.SetOutput(os.Stdout)
		}
	}
	root.AddCommand(installCmd(), preStartCmd(), sidecarCmd(), preStopCmd())
	return root
}

func installCmd() *cobra.Command {
	var to string
	c := &cobra.Command{
		Use:   "install",
		Short: "copy this binary to a shared volume (berth-install init container)",
		RunE:  func(*cobra.Command, []string) error { return hook.Install(to) },
	}
	c.Flags().StringVar(&to, "to", "/berth/bin/berth-hook", "destination path")
	return c
}

func scriptFlags(c *cobra.Command, s *hook.Script) {
	c.Flags().StringVar(&s.Shell, "shell", "/bin/sh", "shell that runs the script")
	c.Flags().StringVar(&s.Inline, "script", "", "inline script text")
	c.Flags().StringVar(&s.File, "script-file", "", "script file")
}

func preStartCmd() *cobra.Command {
	o := hook.PreStartOptions{}
	c := &cobra.Command{
		Use:   "prestart",
		Short: "run the preStart script with bounded retries (berth-prestart init container)",
		RunE: func(*cobra.Command, []string) error {
			ctx, cancel := daemon.SignalContext()
			defer cancel()
			return hook.RunPreStart(ctx, o)
		},
	}
	scriptFlags(c, &o.Script)
	c.Flags().IntVar(&o.Attempts, "attempts", 3, "total script runs allowed, across container restarts")
	c.Flags().DurationVar(&o.Backoff, "backoff", 2*time.Second,
		"wait after the first failure; doubles after each failure")
	c.Flags().DurationVar(&o.MaxBackoff, "max-backoff", time.Minute, "longest wait between attempts")
	c.Flags().DurationVar(&o.Deadline, "deadline", 5*time.Minute,
		"total time allowed from the first attempt, across container restarts")
	c.Flags().StringVar(&o.StatePath, "state", "/berth/state/prestart.json",
		"attempt record in a volume that outlives the container")
	c.Flags().StringVar(&o.TerminationLog, "termination-log", "/dev/termination-log",
		"where the reason of a final failure is written")
	return c
}

func sidecarCmd() *cobra.Command {
	s := &hook.Sidecar{}
	var script hook.Script
	c := &cobra.Command{
		Use: "sidecar",
		Short: "preOnline, online marker, debug-aware liveness and debug proxy (berth-sidecar native " +
			"sidecar)",
		RunE: func(*cobra.Command, []string) error {
			if script.Inline != "" || script.File != "" {
				s.PreOnline = &script
			}
			ctx, cancel := daemon.SignalContext()
			defer cancel()
			return s.Run(ctx)
		},
	}
	scriptFlags(c, &script)
	c.Flags().StringVar(&s.Listen, "listen", ":15120", "address of /healthz /readyz /online /livez")
	c.Flags().StringVar(&s.CheckURL, "check-url", "", "the app's check URL")
	c.Flags().StringVar(&s.LiveURL, "live-url", "",
		"URL /livez checks (the app's liveness probe); default --check-url")
	c.Flags().StringArrayVar(&s.CheckHeaders, "check-header", nil,
		`header sent with --check-url, "Name: value" (repeatable)`)
	c.Flags().StringArrayVar(&s.LiveHeaders, "live-header", nil,
		`header sent with --live-url, "Name: value" (repeatable)`)
	c.Flags().DurationVar(&s.CheckTimeout, "check-timeout", 900*time.Millisecond,
		"timeout of one check URL request")
	c.Flags().DurationVar(&s.PollInterval, "poll-interval", time.Second,
		"how often the check URL is polled")
	c.Flags().IntVar(&s.OfflineAfter, "offline-after", 3,
		"consecutive check failures that take an online app offline")
	c.Flags().StringVar(&s.Marker, "marker", "", "online marker file (enables preOnline)")
	c.Flags().StringVar(&s.DebugListen, "debug-listen", "",
		"debug proxy listen address, e.g. 127.0.0.1:15105 (loopback: reached by kubectl port-forward only)")
	c.Flags().StringVar(&s.DebugTarget, "debug-target", "", "the app's debug address, e.g. 127.0.0.1:5005")
	return c
}

func preStopCmd() *cobra.Command {
	p := &hook.PreStop{}
	c := &cobra.Command{
		Use:   "prestop [flags] [-- original preStop command...]",
		Short: "remove the online marker, wait the drain period, then run the container's own preStop",
		RunE: func(_ *cobra.Command, args []string) error {
			p.Then = args
			ctx, cancel := daemon.SignalContext()
			defer cancel()
			return p.Run(ctx)
		},
	}
	c.Flags().StringVar(&p.Marker, "marker", "", "online marker file")
	c.Flags().DurationVar(&p.Drain, "drain", 10*time.Second,
		"how long traffic drains after the marker is removed")
	c.Flags().DurationVar(&p.ThenSleep, "then-sleep", 0,
		"sleep after the drain (the container's own sleep preStop)")
	return c
}
