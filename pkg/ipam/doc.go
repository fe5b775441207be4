// Package ipam is berth's cluster-global IP address management: pools of
// addresses per VLAN, stored in etcd, handed out to pod interfaces by many
// nodes at once and never twice.
//
// Where it sits: the cni-vlan plugin (pkg/cni) links this package and calls
// an Allocator on every CNI ADD/DEL/CHECK/STATUS/GC; cmd/berth-ipam exposes
// the same allocator as a stand-alone CNI IPAM plugin ("type": "berth-ipam")
// for other main plugins; pkg/ipam/agent is the node agent (`cni-vlan agent`)
// and pkg/ipam/reconcile the leak reconciler (`cni-vlan reconcile`) that
// runs in the cluster and frees addresses of pods that no longer exist.
// Their command lines, and the admin CLI (`cni-vlan ipam ...`), are built in
// cmd/cni-vlan/app.
//
// # Data model in etcd (under a prefix, default /berth/ipam)
//
//	<prefix>/pools/<pool>                 JSON Pool
//	<prefix>/ips/<pool>/<ip>              JSON record: owner Handle, time, fixed flag  (one key per IP)
//	<prefix>/handles/<containerID>/<if>   JSON {pool, ip}                              (handle index)
//	<prefix>/fixed/<pool>/<ns>/<pod>      the IP pinned to a StatefulSet pod
//
// An allocation is ONE etcd transaction: "if the IP key and the handle key
// do not exist, create both". There is no lock: two nodes that pick the
// same candidate race inside etcd and exactly one wins; the loser picks
// again. Candidates start at a hash of the handle (so nodes spread over the
// pool instead of all fighting for the first free address); after a lost
// race the allocator reads the pool's used keys and picks a random free one.
// After a bounded number of attempts it returns ErrTryAgain, which the CNI
// boundary maps to error code 11 ("try again later").
//
// Because the handle key is part of every transaction, an ADD retried after
// an ambiguous failure (etcd leader lost mid-commit) finds its own handle and
// returns the same address: the same handle always gets the same IP, and an
// IP is never owned by two handles.
//
// # Using it from a CNI plugin
//
//	conf, _ := ipam.LoadConfig(netconfBytes)          // or embed ipam.Config in the plugin's netconf
//
// alloc, closeFn, _ := conf.Open(ctx) // etcd client + allocator; conf.EnsurePool(ctx, alloc) on
// ADD
//
//	defer closeFn()
//	h, _ := ipam.HandleFromCNI(args.ContainerID, args.IfName, args.Args, netName, conf.Node())
//	a, err := alloc.Allocate(ctx, conf.Pool, conf.WithFixed(h))
//	if err != nil { return ipam.CNIError(err) }      // *types.Error with the right code
//	res := a.Result()                                 // *types100.Result: IP, gateway, routes
//
// DEL calls Release (missing state is success), CHECK calls Lookup, STATUS
// calls Status (etcd reachable and pool not exhausted; CNIError maps it to
// code 50), GC calls GC with the valid attachments of this node.
package ipam
