package interop

import "github.com/containers/conmon-rs/pkg/client"

// This is the only file that differs between test/interop/v073 and
// test/interop/v101 (apart from the package name): the other _test.go files
// are kept identical on purpose, so a fix in one module is copied verbatim
// to the other.

// clientGeneration names the conmon-rs Go client this module pins.
const clientGeneration = "v0.7.3"

// serverLogDriver is the --log-driver CRI-O passes with this client
// generation: CRI-O 1.34 (v0.7.x client) always passes "systemd". With no
// journald on the host gomon is expected to fall back to stderr.
const serverLogDriver = client.LogDriverSystemd
