#!/usr/bin/env bash
# e2e.sh [GOMON_BINARY]: gomon as CRI-O's pod monitor, end to end.
#
# Builds (once, cached in $E2E_CACHE, default /var/cache/gomon-e2e) CRI-O, pinns, crictl and
# Jaeger with hack/e2e-tools.sh, then runs the Go test module test/e2e, which builds a busybox
# image, starts Jaeger and CRI-O under a temporary directory, drives pods through crictl and
# removes everything it started. Needs root. Extra `go test` flags: E2E_FLAGS (default -v).
# The gomon span check is an assertion (GOMON_E2E_EXPECT_TRACES=0 makes it a loud skip);
# GOMON_E2E_ROUNDS=N repeats every lifecycle N times (the timing table shows medians).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
gomon=$(realpath "${1:-$root/bin/gomon}")
GO=${GO:-go}
[[ -x $gomon ]] || { echo "e2e: no gomon binary at $gomon (run make build)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "e2e: needs root" >&2; exit 1; }

start=$SECONDS
tools=$("$root/hack/e2e-tools.sh")
eval "$tools"
echo "e2e: tools ready in $((SECONDS - start)) s" >&2

export GOMON_E2E_EXPECT_TRACES=${GOMON_E2E_EXPECT_TRACES:-1}
export GOMON_BINARY=$gomon CRIO PINNS CRICTL JAEGER GOMON_REQUIRE_ROOT=1
start=$SECONDS
status=0
(cd "$root/test/e2e" && $GO test -count=1 -timeout 20m ${E2E_FLAGS--v} ./...) || status=$?
echo "e2e: test ran in $((SECONDS - start)) s (exit $status)" >&2
exit "$status"
