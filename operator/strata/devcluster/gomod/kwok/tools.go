//go:build tools

// Records the kwok command as a dependency so `go mod tidy` keeps it.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
