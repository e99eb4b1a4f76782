//go:build tools

// Records the Kueue controller command as a dependency so `go mod tidy` keeps it.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
