//go:build tools

// Package tools names the command build.sh builds, so that `go mod tidy` keeps
// every module it needs in go.sum.
package tools

import _ "code.gitea.io/gitea"
