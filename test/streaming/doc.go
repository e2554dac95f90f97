// Package interop holds end-to-end tests of gomon's streaming server
// (ServeExecContainer, ServeAttachContainer, ServePortForwardContainer):
// the gomon daemon is started and driven through the real conmon-rs Go
// client v1.0.1, and the returned URLs are used with client-go's
// WebSocket executor and port-forward dialer, as the kubelet side would.
//
// Everything lives in _test.go files; this file only gives the package a
// doc comment so that `go vet ./...` has a package to see.
package interop
