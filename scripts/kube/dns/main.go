// Command cluster-dns is CoreDNS with only the plugins the test cluster of
// scripts/kube/up.sh uses (bind, errors, cache, kubernetes, forward), built the way CoreDNS
// documents for a custom plugin set: fewer plugins, a much shorter cold build.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// The order in which the plugins handle a query.
var directives = []string{"bind", "errors", "cache", "kubernetes", "forward"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
