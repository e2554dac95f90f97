package interop

import (
	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/interop/generation"
)

// One source, two client generations: `go test` builds this package
// against the conmon-rs client v1.0.1 (go.mod), `go test
// -modfile=go.v073.mod` against v0.7.3. Each mod file also picks its own
// copy of package generation, which holds all that differs.

// clientGeneration names the conmon-rs Go client this build links.
const clientGeneration = generation.Client

// serverLogDriver is the --log-driver CRI-O passes with this generation.
const serverLogDriver = client.LogDriver(generation.ServerLogDriver)
