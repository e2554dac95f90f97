// Package harness is the test support shared by gomon's test modules
// (test/interop, test/streaming, test/reliability and its firstcall
// submodule): it finds the gomon binary, runs a test binary as the child
// subreaper of the daemons it starts, adopts, stops and reaps a daemon,
// checks that a test left no process behind, probes a process's fds,
// threads and memory, and builds busybox OCI bundles.
//
// It knows no conmon-rs client: the suites pin different client
// generations whose types differ, so each suite keeps a few lines that
// call client.New and hand the daemon's PID and Shutdown to Adopt.
//
// Root-only helpers skip with a reason, or fail when GOMON_REQUIRE_ROOT=1
// so that CI cannot pass by skipping.
package harness
