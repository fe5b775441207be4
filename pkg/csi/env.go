package csi

import "os"

func defaultKubeconfigEnv() string { return os.Getenv("KUBECONFIG") }

func namespaceOr(def string) string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return def
}
