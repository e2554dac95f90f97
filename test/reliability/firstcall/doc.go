// Package firstcall stresses the first call of fresh connections, the way
// CRI-O 1.34 talks to its pod monitor: through the conmon-rs Go client it
// vendors (v0.6.6, on capnp-go v3.0.1-alpha.2), which dials a connection
// per call and pipelines that call on the connection's bootstrap.
//
// It is its own module because the rest of test/reliability drives gomon
// through conmon-rs v1.0.1, and one module can hold one version of a
// module. Everything lives in _test.go files; this file only gives the
// package a doc comment so that `go vet ./...` has a package to see.
package firstcall
