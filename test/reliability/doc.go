// Package reliability holds gomon's reliability and security tests: faults
// injected through a runtime wrapper, clients killed mid-call, full and
// vanished log filesystems, leaks over many cycles, bad input and argument
// injection, driven through the real conmon-rs Go client at v1.0.1.
//
// Everything lives in _test.go files; this file only gives the package a doc
// comment so that `go vet ./...` and `go build ./...` have a package to see.
package reliability
