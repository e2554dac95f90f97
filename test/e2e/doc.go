// Package e2e runs gomon as CRI-O's pod monitor, end to end: a real CRI-O (v1.34 or v1.36) with
// a `runtime_type = "pod"` handler whose monitor_path is gomon, driven by crictl (TestCRIO) or by
// a real standalone kubelet running a static pod (TestKubelet), traced into an in-memory Jaeger,
// and compared with CRI-O's own conmon.
//
// The test lives in the _test.go files and is started by `make e2e` (hack/e2e.sh), which builds
// the pinned tools and passes their paths in the environment: GOMON_BINARY, CRIO, PINNS, CRICTL,
// JAEGER, KUBELET (and optionally RUNC, CONMON). Without them the test skips with a reason, or fails when
// GOMON_REQUIRE_ROOT=1.
package e2e
