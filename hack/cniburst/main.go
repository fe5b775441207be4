// Command cniburst runs CNI plugin binaries the way a container runtime does,
// for hack/bench-cni.sh: through libcni's invoke package (fork and exec from a
// Go process, the config on stdin, CNI_* in the environment), with no shell
// or `ip netns exec` per call, whose own start-up would be most of what is
// measured. Run it inside the simulated host's network namespace.
//
//	cniburst call -plugin P -config C -verb ADD -netns /var/run/netns/x -id c1
//	    one call; prints its wall time in ms (the exec of the plugin, as a runtime sees it)
//	cniburst burst -plugin P -config C -verb ADD -n 200 -parallel 50 -id-prefix agent
//	    prints allocations/s; each failed call is one line on stderr
//	cniburst startup -n 40 name=path ...
//	    runs CNI_COMMAND=VERSION of each binary in turn, n times; prints "name ms" lines
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cniburst burst|startup [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "call":
		err = call(os.Args[2:])
	case "burst":
		err = burst(os.Args[2:])
	case "startup":
		err = startup(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want call, burst or startup", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cniburst:", err)
		os.Exit(1)
	}
}

// caller is the plugin, its config and the verb: the flags call and burst share.
type caller struct {
	plugin, config, verb, cniPath string
	conf                          []byte
}

func (c *caller) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.plugin, "plugin", "", "plugin binary")
	fs.StringVar(&c.config, "config", "", "network config file (the plugin's stdin)")
	fs.StringVar(&c.verb, "verb", "ADD", "ADD or DEL")
	fs.StringVar(&c.cniPath, "cni-path", "/usr/lib/cni", "CNI_PATH")
}

// parse parses argv into fs and reads the config.
func (c *caller) parse(fs *flag.FlagSet, argv []string) error {
	if err := fs.Parse(argv); err != nil {
		return err
	}
	var err error
	c.conf, err = os.ReadFile(c.config)
	return err
}

// run makes one CNI call as libcni does.
func (c *caller) run(netns, id string) error {
	args := &invoke.Args{Command: c.verb, ContainerID: id, NetNS: netns, IfName: "eth0", Path: c.cniPath}
	// The plugin's own stderr is dropped: a failure comes back as the CNI error on its stdout.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: io.Discard}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch c.verb {
	case "ADD":
		_, err := invoke.ExecPluginWithResult(ctx, c.plugin, c.conf, args, exec)
		return err
	case "DEL":
		return invoke.ExecPluginWithoutResult(ctx, c.plugin, c.conf, args, exec)
	}
	return fmt.Errorf("verb %q: want ADD or DEL", c.verb)
}

func call(argv []string) error {
	var c caller
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	c.addFlags(fs)
	netns := fs.String("netns", "", "the pod's netns path")
	id := fs.String("id", "", "container ID")
	if err := c.parse(fs, argv); err != nil {
		return err
	}
	t0 := time.Now()
	if err := c.run(*netns, *id); err != nil {
		return fmt.Errorf("%s %s: %w", c.verb, *id, err)
	}
	fmt.Printf("%.3f\n", float64(time.Since(t0).Microseconds())/1000)
	return nil
}

func burst(argv []string) error {
	var c caller
	fs := flag.NewFlagSet("burst", flag.ExitOnError)
	c.addFlags(fs)
	n := fs.Int("n", 200, "calls, one per simulated pod")
	parallel := fs.Int("parallel", 50, "calls at a time")
	netnsPrefix := fs.String("netns-prefix", "/var/run/netns/bbp", "pod i's netns is this followed by i (1..n)")
	idPrefix := fs.String("id-prefix", "burst", "container IDs are this followed by i")
	if err := c.parse(fs, argv); err != nil {
		return err
	}
	var failed atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range *parallel {
		wg.Go(func() {
			for i := range work {
				id := fmt.Sprintf("%s%d", *idPrefix, i)
				if err := c.run(fmt.Sprintf("%s%d", *netnsPrefix, i), id); err != nil {
					failed.Add(1)
					fmt.Fprintf(os.Stderr, "%s %s: %v\n", c.verb, id, err)
				}
			}
		})
	}
	for i := 1; i <= *n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	ok := float64(int64(*n) - failed.Load())
	fmt.Printf("%.1f\n", ok/time.Since(start).Seconds())
	return nil
}

func startup(argv []string) error {
	fs := flag.NewFlagSet("startup", flag.ExitOnError)
	n := fs.Int("n", 40, "runs of each binary")
	if err := fs.Parse(argv); err != nil {
		return err
	}
	type bin struct{ name, path string }
	var bins []bin
	for _, a := range fs.Args() {
		name, path, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want name=path", a)
		}
		bins = append(bins, bin{name, path})
	}
	raw := &invoke.RawExec{Stderr: os.Stderr}
	env := []string{"CNI_COMMAND=VERSION"}
	for range *n {
		// Interleaved, so that drift hits every binary alike, in a new order each
		// round: in a fixed order a binary always ran right after the same one
		// (cni-vlan after the 8 ms berth-ipam, whose run left it 10 % slower).
		rand.Shuffle(len(bins), func(i, j int) { bins[i], bins[j] = bins[j], bins[i] })
		for _, b := range bins {
			t0 := time.Now()
			if _, err := raw.ExecPlugin(context.Background(), b.path, []byte(`{"cniVersion":"1.0.0"}`), env); err != nil {
				return fmt.Errorf("%s VERSION: %w", b.name, err)
			}
			fmt.Printf("%s %.3f\n", b.name, float64(time.Since(t0).Microseconds())/1000)
		}
	}
	return nil
}
