//go:build tools

// Records the promtool command as a dependency so `go mod tidy` keeps it.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
