// Command etcd runs the etcd server used by Switchboard's test control plane.
// It exists only so the test harness can build etcd from its Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
