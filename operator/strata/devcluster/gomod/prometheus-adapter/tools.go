//go:build tools

// Records the prometheus-adapter command as a dependency so `go mod tidy` keeps it.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
