// Package interop holds interop tests that start and drive the gomon daemon
// through the real conmon-rs Go client at v0.7.3, the generation CRI-O up to
// 1.36 vendors (v0.x wire layout, passes --cgroup-manager).
//
// Everything lives in _test.go files; this file only gives the package a doc
// comment so that `go vet ./...` and `go build ./...` have a package to see.
package interop
