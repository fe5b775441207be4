package testenv

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ManifestCommand is one container of manifests/ that runs a berth binary.
type ManifestCommand struct {
	File string
	// Args are the command after the binary (a subcommand, if any) followed by the args,
	// with every $(VAR) replaced by an example value, as the kubelet would expand it.
	Args []string
}

var envRef = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

// ManifestCommands returns every container in the repository's manifests/ whose command runs
// binary, so a binary's tests can parse exactly the flags its manifests pass. vars gives the
// example value of each $(VAR) the args use; an unknown one fails the test.
func ManifestCommands(t testing.TB, binary string, vars map[string]string) []ManifestCommand {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..", "manifests")
	var out []ManifestCommand
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, doc := range strings.Split(string(raw), "\n---") {
			var obj any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				continue // not every YAML file is an object list (kustomize patches)
			}
			for _, c := range containers(obj) {
				if len(c.Command) == 0 || path.Base(c.Command[0]) != binary {
					continue
				}
				args := append(append([]string{}, c.Command[1:]...), c.Args...)
				for i, a := range args {
					args[i] = envRef.ReplaceAllStringFunc(a, func(ref string) string {
						name := envRef.FindStringSubmatch(ref)[1]
						v, ok := vars[name]
						if !ok {
							t.Errorf("%s: %s passes $(%s); give the test an example value", p, binary, name)
						}
						return v
					})
				}
				out = append(out, ManifestCommand{File: p, Args: args})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no container in %s runs %s", root, binary)
	}
	return out
}

type container struct {
	Command []string `json:"command"`
	Args    []string `json:"args"`
}

// containers finds every "containers" and "initContainers" list below obj.
func containers(obj any) []container {
	var out []container
	switch v := obj.(type) {
	case map[string]any:
		for k, x := range v {
			if k == "containers" || k == "initContainers" {
				raw, _ := yaml.Marshal(x)
				var cs []container
				if yaml.Unmarshal(raw, &cs) == nil {
					out = append(out, cs...)
				}
				continue
			}
			out = append(out, containers(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, containers(x)...)
		}
	}
	return out
}
