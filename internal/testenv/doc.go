// Package testenv starts the real components berth's integration tests run
// against: an etcd on free loopback ports (Debian's etcd-server), and a
// kube-apiserver + etcd pair through controller-runtime's envtest, using the
// kube-apiserver that hack/build-kube.sh builds into .cache/kube/bin.
//
// Nothing here is a fake: a test that needs a component which is not
// installed fails with a message that says how to get it (`make deps`),
// it is never silently skipped.
package testenv
