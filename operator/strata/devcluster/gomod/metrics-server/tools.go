//go:build tools

// Records the metrics-server command as a dependency so `go mod tidy` keeps it.
package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
