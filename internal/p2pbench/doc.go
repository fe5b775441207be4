// Package p2pbench is the harness of `make bench-p2p`: a simulated cluster in
// which every node is its own network namespace behind its own shaped link,
// so that links, not the machine's shared CPUs, set the pace of a pull.
//
//	registry netns ──eth0 (tbf both ways)──┐
//	node-0 netns   ──eth0 (tbf both ways)──┤ bridge in the switch netns
//	node-1 netns   ──eth0 (tbf both ways)──┤
//	...                                     ┘
//
// The registry is a real distribution/v3 (internal/testenv) reached through a
// counting proxy listening inside the registry's namespace; every node runs
// the real p2p-puller binary (started in its namespace with nsenter, with the
// DaemonSet's flags and a static peer list) and a client that pulls the image
// like containerd: the manifest, then the config and layers, three at a time,
// each checked against its digest. BenchmarkP2PLinks (bench_integration_test.go)
// runs direct pulls against pulls through p2p-puller and prints the table
// docs/p2p.md#benchmark shows.
//
// Namespaces get unique names (cnitest-<uuid>, from containernetworking's
// testutils) and are removed by Close, so the harness can run beside other work.
package p2pbench
