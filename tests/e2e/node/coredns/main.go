// The CoreDNS binary of the kind node image, with only the plugins the cluster's Corefile
// uses (kubeadm's default: errors, health, ready, kubernetes, prometheus, forward, cache,
// loop, reload, loadbalance; plus log and hosts for debugging a cluster by hand). The full
// CoreDNS build compiles every cloud and tracing plugin too, which took most of the node's
// cold build time; plugins that are not imported are simply not registered.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
