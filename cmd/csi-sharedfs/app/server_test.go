package app

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// The node plugin starts `csi-sharedfs iolayer` with iolayer.Options.Args: every option must
// come back from the subcommand's flags as it went in, or a layer serves with other limits.
func TestIOLayerArgsRoundTrip(t *testing.T) {
	for _, want := range []iolayer.Options{
		{VolumeID: "v1#berth#ab#pvc-1", Source: "/s", Target: "/t", Socket: "/l.sock",
			Limits: iolayer.Limits{ReadBytesPerSecond: 20 << 20, WriteIOPS: 100}},
		{VolumeID: "v1#berth#cd#pvc-2", Source: "/s 2", Target: "/t,2", Socket: "/l2.sock",
			ReadOnly: true},
	} {
		args, err := want.Args()
		if err != nil {
			t.Fatal(err)
		}
		o := &ioLayerOptions{}
		fs := pflag.NewFlagSet("iolayer", pflag.ContinueOnError)
		o.addFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatalf("iolayer %v: %v", args, err)
		}
		if err := o.complete(); err != nil {
			t.Fatal(err)
		}
		if o.Options != want {
			t.Errorf("iolayer %v parsed as %+v, want %+v", args, o.Options, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"node", []string{"--node", "--node-id=n1", "--gluster-server=g"}, ""},
		{"no role", []string{"--gluster-server=g"}, "--controller and/or --node"},
		{"node without id", []string{"--node", "--node-id=", "--gluster-server=g"}, "--node-id"},
		{"auth allow everyone", []string{"--controller", "--gluster-server=g",
			"--gluster-auth-allow=*"}, "invalid --gluster-auth-allow entry"},
		{"cgroup outside", []string{"--node", "--node-id=n", "--gluster-server=g",
			"--mount-cgroup=../x"}, "invalid mount cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			fs := pflag.NewFlagSet("csi-sharedfs", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" &&
				(err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Validate(%v) = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}
