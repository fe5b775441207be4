package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/pkg/p2p"
	"github.com/berth-dev/berth/pkg/p2p/peers"
)

func newPreheatCommand() *cobra.Command {
	o := &options{}
	var nodes string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "preheat IMAGE",
		Short: "pull IMAGE into the cache of chosen nodes before a rollout",
		Long: "preheat asks each chosen node's p2p-puller (peer API, signed with --peer-key-file) to " +
			"pull IMAGE\n" +
			"with its --pull-secret-file credentials; nodes share the work like a simultaneous pull.\n" +
			"Example (inside the DaemonSet): kubectl -n berth-system exec ds/p2p-puller -- p2p-puller " +
			"preheat ghcr.io/acme/app:v2 --nodes node-a,node-b",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			targets, key, err := o.preheatTargets(ctx, nodes)
			if err != nil {
				return err
			}
			return preheat(ctx, cmd.OutOrStdout(), targets, key, args[0])
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&nodes, "nodes", "", "comma-separated node names (default: every peer)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this long")
	return cmd
}

func (o *options) preheatTargets(ctx context.Context, nodes string) ([]peers.Peer, []byte, error) {
	key, err := o.peerKey(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	self := peers.Peer{Name: "preheat-cli", Addr: "127.0.0.1:0"}
	if o.advertise != "" {
		self.Addr = o.advertise
	}
	d, err := o.discovery(ctx, self)
	if err != nil {
		return nil, nil, err
	}
	want := map[string]bool{}
	for _, n := range strings.Split(nodes, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	var out []peers.Peer
	for _, p := range d.Peers() {
		if p.Name != self.Name && (len(want) == 0 || want[p.Name]) {
			out = append(out, p)
			delete(want, p.Name)
		}
	}
	if len(want) > 0 {
		return nil, nil, fmt.Errorf("no running p2p-puller on node(s) %v", keys(want))
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("no p2p-puller peers found")
	}
	return out, key, nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// preheat asks every target at once and prints one line per node.
func preheat(ctx context.Context, w io.Writer, targets []peers.Peer, key []byte, image string) error {
	body, _ := json.Marshal(p2p.PreheatRequest{Image: image}) // a string field always marshals
	type result struct {
		res *p2p.PreheatResult
		err error
	}
	results := make([]result, len(targets))
	client, err := p2p.PeerClient(key)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			resp, err := p2p.SignedRequest(ctx, client, key, "preheat-cli", http.MethodPost, t.Addr,
				"/p2p/v1/preheat", "", body, nil)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				results[i].err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
				return
			}
			results[i].res = &p2p.PreheatResult{}
			results[i].err = json.Unmarshal(b, results[i].res)
		})
	}
	wg.Wait()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRESULT\tBLOBS\tBYTES\tSECONDS")
	failed := 0
	for i, r := range results {
		if r.err != nil {
			failed++
			fmt.Fprintf(tw, "%s\tFAILED: %v\t\t\t\n", targets[i].Name, r.err)
			continue
		}
		fmt.Fprintf(tw, "%s\tok\t%d\t%d\t%.1f\n", targets[i].Name, r.res.Blobs, r.res.Bytes, r.res.Seconds)
	}
	_ = tw.Flush() // stdout
	if failed > 0 {
		return fmt.Errorf("preheat of %s failed on %d of %d nodes", image, failed, len(targets))
	}
	return nil
}
