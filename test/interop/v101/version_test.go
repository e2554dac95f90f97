package interop

import "github.com/containers/conmon-rs/pkg/client"

// This is the only file that differs between test/interop/v073 and
// test/interop/v101 (apart from the package name): the other _test.go files
// are kept identical on purpose, so a fix in one module is copied verbatim
// to the other.

// clientGeneration names the conmon-rs Go client this module pins.
const clientGeneration = "v1.0.1"

// serverLogDriver is the --log-driver CRI-O main passes by default ("none"),
// see docs/contract.md, "How CRI-O starts gomon".
const serverLogDriver = client.LogDriverNone
