// CoreDNS with only the plugins the dev cluster's Service DNS needs. Linking the full plugin
// set would compile every cloud provider's SDK; a custom main is CoreDNS's documented way to
// choose plugins.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

// Plugin execution order, as in CoreDNS's plugin.cfg.
var directives = []string{"bind", "errors", "log", "cache", "kubernetes", "forward"}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
