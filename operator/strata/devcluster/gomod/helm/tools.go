//go:build tools

// Records the helm command as a dependency so `go mod tidy` keeps it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
