package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ListPins returns the fixed-IP pins of pool ("" = every pool), sorted.
func (a *EtcdAllocator) ListPins(ctx context.Context, pool string) ([]Pin, error) {
	resp, err := a.cli.Get(ctx, a.pinPrefix(pool), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list pins", err)
	}
	var out []Pin
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), a.pinPrefix("")), "/")
		ip, err := netip.ParseAddr(string(kv.Value))
		if len(parts) != 3 || err != nil {
			return nil, fmt.Errorf("ipam: corrupt pin %s=%q", kv.Key, kv.Value)
		}
		out = append(out, Pin{Pool: parts[0], Namespace: parts[1], Name: parts[2], IP: ip})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Pool+"/"+out[i].Namespace+"/"+out[i].Name < out[j].Pool+"/"+out[j].Namespace+"/"+out[j].Name
	})
	return out, nil
}

// Unpin removes the fixed-IP pin of namespace/name in pool. An address only
// held for the pod is freed at once; one in use is freed at its release.
func (a *EtcdAllocator) Unpin(ctx context.Context, pool, namespace, name string) error {
	pk := a.pinKey(pool, namespace, name)
	for attempt := 0; attempt < 8; attempt++ {
		resp, err := a.cli.Get(ctx, pk)
		if err != nil {
			return storeErr("unpin", err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%w: no fixed IP pinned for %s/%s in pool %q", ErrNotFound, namespace, name, pool)
		}
		ip, err := netip.ParseAddr(string(resp.Kvs[0].Value))
		if err != nil {
			return fmt.Errorf("ipam: corrupt pin %s: %w", pk, err)
		}
		o, err := a.readByIP(ctx, pool, ip)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(pk), "=", resp.Kvs[0].ModRevision)}
		ops := []clientv3.Op{clientv3.OpDelete(pk)}
		if o != nil && o.rec.Fixed && o.rec.Handle.PodNamespace == namespace && o.rec.Handle.PodName == name {
			ipk := a.ipKey(pool, ip)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ipk), "=", o.ipRev))
			if o.rec.Handle.ContainerID == "" {
				ops = append(ops, clientv3.OpDelete(ipk))
			} else {
				rec := o.rec
				rec.Fixed, rec.Handle.Fixed = false, false
				ops = append(ops, clientv3.OpPut(ipk, mustJSON(rec)))
			}
		}
		tr, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return storeErr("unpin", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("%w: unpin %s/%s: the address kept changing", ErrTryAgain, namespace, name)
}
