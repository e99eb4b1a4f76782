//go:build tools

// Pins the weed command's module in go.mod / go.sum.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
