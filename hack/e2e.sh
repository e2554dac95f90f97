#!/usr/bin/env bash
# e2e.sh [GOMON_BINARY]: gomon as CRI-O's pod monitor, end to end.
#
# Builds (once, cached in $E2E_CACHE, default /var/cache/gomon-e2e) CRI-O, pinns, crictl, Jaeger
# and the kubelet with hack/e2e-tools.sh, then runs the Go test module test/e2e, which builds a
# busybox image, starts Jaeger and CRI-O under a temporary directory, drives pods and removes
# everything it started. Needs root. Extra `go test` flags: E2E_FLAGS (default -v).
#
# E2E_SUITE picks what runs:
#   crictl  (default) pods driven by crictl, once per CRI-O of the matrix (v1.34 and v1.36),
#           plus the offline tests of the trace checks;
#   kubelet a static pod run by a standalone kubelet on CRI-O v1.34 (GOMON_E2E_TRACE_SVG=<path>
#           also writes the trace picture there).
# The gomon span check is an assertion (GOMON_E2E_EXPECT_TRACES=0 makes it a loud skip);
# GOMON_E2E_ROUNDS=N repeats every crictl lifecycle N times (the timing table shows medians).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
gomon=$(realpath "${1:-$root/bin/gomon}")
GO=${GO:-go}
suite=${E2E_SUITE:-crictl}
[[ -x $gomon ]] || { echo "e2e: no gomon binary at $gomon (run make build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "e2e: needs root" >&2; exit 1; }

start=$SECONDS
tools=$("$root/hack/e2e-tools.sh")
eval "$tools"
echo "e2e: tools ready in $((SECONDS - start)) s" >&2

export GOMON_E2E_EXPECT_TRACES=${GOMON_E2E_EXPECT_TRACES:-1}
export GOMON_BINARY=$gomon CRICTL JAEGER KUBELET GOMON_REQUIRE_ROOT=1

# run_e2e CRIO PINNS TIMEOUT RUN: one `go test` of test/e2e against one CRI-O.
run_e2e() {
	local crio=$1 pinns=$2 timeout=$3 run=$4 status=0 start=$SECONDS version
	version=$("$crio" --version 2>/dev/null | sed -n 's/^crio version *//p;s/^Version: *//p' | head -1)
	echo "e2e: $suite suite on CRI-O ${version:-?} ($crio)" >&2
	(cd "$root/test/e2e" && CRIO=$crio PINNS=$pinns $GO test -count=1 -timeout "$timeout" -run "$run" ${E2E_FLAGS--v} ./...) || status=$?
	echo "e2e: $suite suite on CRI-O ${version:-?} ran in $((SECONDS - start)) s (exit $status)" >&2
	return "$status"
}

case $suite in
crictl)
	status=0
	run_e2e "$CRIO" "$PINNS" 20m '^Test(CRIO|GomonSpanCheck|KubeletSpanCheck|TraceSVG|PictureSpans|ShortSpanName)$' || status=1
	run_e2e "$CRIO_NEXT" "$PINNS_NEXT" 20m '^TestCRIO$' || status=1
	exit "$status"
	;;
kubelet)
	run_e2e "$CRIO" "$PINNS" 15m '^TestKubelet$'
	;;
*)
	echo "e2e: unknown E2E_SUITE=$suite (crictl or kubelet)" >&2
	exit 2
	;;
esac
