// Package interop holds interop tests that start and drive the gomon daemon
// through the real conmon-rs Go client at v1.0.1, the generation CRI-O main
// vendors (v1.0 wire layout, one persistent RPC connection).
//
// Everything lives in _test.go files; this file only gives the package a doc
// comment so that `go vet ./...` and `go build ./...` have a package to see.
package interop
