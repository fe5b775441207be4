package kubeclient

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/homedir"
)

// RESTConfig loads the client configuration with the precedence controller-runtime and
// kubectl users expect: kubeconfig (a --kubeconfig flag), else the files in $KUBECONFIG, else
// the in-cluster service account, else ~/.kube/config. In-cluster wins over the home file so a
// pod whose image happens to carry a ~/.kube/config still talks to its own cluster.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	return restConfig(kubeconfig, rest.InClusterConfig)
}

// NewClientset is RESTConfig followed by kubernetes.NewForConfig.
func NewClientset(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// restConfig takes the in-cluster loader as a parameter: a test cannot create the service
// account files at their fixed path, so it passes a loader of its own.
func restConfig(kubeconfig string, inCluster func() (*rest.Config, error)) (*rest.Config, error) {
	if kubeconfig != "" {
		return fromFiles(&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
			"--kubeconfig "+kubeconfig)
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return fromFiles(&clientcmd.ClientConfigLoadingRules{
			Precedence: filepath.SplitList(env),
		}, "$KUBECONFIG "+env)
	}
	cfg, inErr := inCluster()
	if inErr == nil {
		return cfg, nil
	}
	home := filepath.Join(homedir.HomeDir(), clientcmd.RecommendedHomeDir,
		clientcmd.RecommendedFileName)
	if _, err := os.Stat(home); err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration: not in a cluster (%w) and no %s; "+
			"pass --kubeconfig=/path/to/kubeconfig or set $KUBECONFIG",
			inErr, home)
	}
	return fromFiles(&clientcmd.ClientConfigLoadingRules{ExplicitPath: home}, home)
}

func fromFiles(rules *clientcmd.ClientConfigLoadingRules, from string) (*rest.Config, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig from %s: %w", from, err)
	}
	return cfg, nil
}
