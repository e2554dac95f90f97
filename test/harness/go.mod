module github.com/gomon-dev/gomon/test/harness

go 1.26.0

// The lowest x/sys any importing test module pins (test/interop with the
// v0.7.3 client), so importing the harness bumps no module's versions.
require golang.org/x/sys v0.37.0
