# gomon: build, test and generate. `make help` lists the targets.

GO          ?= go
BIN         := bin
GOMON       := $(BIN)/gomon
CAPNP_STD    = $(shell $(GO) list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
GOLANGCI_LINT_VERSION := v2.15.0
RUNC        ?= $(shell command -v runc || echo /usr/sbin/runc)
DEMO_ARGS   ?= sh -c 'echo hello from gomon in a busybox container; uname -sr; id'
E2E_CACHE   ?= /var/cache/gomon-e2e
E2E_FLAGS   ?= -v
# KUBELET_TRACE_SVG=docs/kubelet-trace.svg makes `make e2e-kubelet` redraw the README's picture.
KUBELET_TRACE_SVG ?=

GIT_TAG     := $(shell git describe --tags --always --dirty 2>/dev/null || echo none)
BUILD_DATE  := $(shell date -u "+%Y-%m-%d %H:%M:%S")
GIT_COMMIT  := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.tag=$(GIT_TAG)' \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.buildDate=$(BUILD_DATE)' \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.commit=$(GIT_COMMIT)'

.PHONY: help deps build test test-unit test-interop reliability fuzz soak generate check-generate lint demo bundle clean e2e e2e-kubelet

help: ## list the targets
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Debian packages the containers and tests need; installed when missing.
DEPS        := runc busybox-static

deps: ## install runc and busybox-static with apt when missing (root)
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

build: ## build bin/gomon
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(GOMON) ./cmd/gomon

test: deps build ## run every test: unit, integration (root + runc) and interop
	$(GO) test -race -count=1 ./...
	$(MAKE) test-interop

test-unit: ## unit tests only (no root needed)
	$(GO) test -short -count=1 ./...

test-interop: build ## interop tests through the conmon-rs Go clients v0.7.3 and v1.0.1, and client-go streaming
	cd test/interop && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -modfile=go.v073.mod -count=1 ./...
	cd test/interop && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -count=1 ./...
	cd test/streaming && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -count=1 ./...

reliability: build ## faults, killed clients, full/deleted logs, leaks, bad input, security (root + runc); then fuzz
	cd test/reliability && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -count=1 -timeout 15m ./...
	cd test/reliability/firstcall && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -count=1 -timeout 10m ./...
	$(MAKE) fuzz

# Every native fuzz target of the main module, as <package dir>:<name>,
# found in the sources so a new target cannot be left out. `go test -fuzz`
# runs one target per invocation. Seed corpora are in each package's
# testdata/fuzz/<name>/ (plain `go test` runs them too); a failing input
# is written there. FUZZTIME=1m for a longer run, FUZZ_FLAGS=-parallel=1
# on a busy machine.
# The fuzzing runs on Go 1.27.3, which the go command takes from the module
# proxy once (76 MB): Go 1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" and no failing input when -fuzztime
# ends while a worker is mid-call (go.dev/issue/75804, fixed in 1.27; seen
# on FuzzSplitLines in CI). The build and every other test stay on the
# machine's Go. FUZZ_TOOLCHAIN=local uses the machine's Go for fuzzing too.
FUZZTIME       ?= 15s
FUZZ_FLAGS     ?=
FUZZ_TOOLCHAIN ?= go1.27.3
FUZZ_TARGETS = $(shell git grep -o -E '^func Fuzz[A-Za-z0-9_]+' -- '*_test.go' ':!test/' ':!bench/' | \
	sed -E 's|^(.*)/[^/]*:func (Fuzz.*)$$|\1:\2|')

fuzz: ## run every fuzz target for FUZZTIME (15s) each
	@test -n "$(FUZZ_TARGETS)" || { echo "no fuzz targets found"; exit 1; }
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in ./$${t%%:*} for $(FUZZTIME)"; \
		GOTOOLCHAIN=$(FUZZ_TOOLCHAIN) $(GO) test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) $(FUZZ_FLAGS) ./$${t%%:*}; \
	done

# The soak is not part of `make reliability` (nor CI): it runs for minutes.
SOAK_DURATION ?= 5m

soak: build ## a pod logging for SOAK_DURATION (default 5m) under random faults; checks exit codes, bytes, fds, threads, RSS (root + runc)
	cd test/reliability && GOMON_BINARY=$(CURDIR)/$(GOMON) GOMON_SOAK=$(SOAK_DURATION) GOMON_REQUIRE_ROOT=1 $(GO) test -count=1 -v -run '^TestSoak$$' -timeout 2h .

$(BIN)/capnpc-go: go.mod
	$(GO) build -o $@ capnproto.org/go/capnp/v3/capnpc-go

generate: $(BIN)/capnpc-go ## regenerate the Cap'n Proto Go code (needs Debian's capnp)
	for d in proto protov0; do \
		capnp compile -I$(CAPNP_STD) -o$(CURDIR)/$(BIN)/capnpc-go:rpc/$$d --src-prefix=rpc/$$d rpc/$$d/conmon.capnp || exit 1; \
	done

check-generate: generate ## fail if the checked-in generated code is stale
	git diff --exit-code -- rpc/proto rpc/protov0

$(BIN)/golangci-lint:
	GOBIN=$(CURDIR)/$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Every Go module of the repository, linted with the one config at the root.
LINT_MODULES := . bench test/harness test/interop test/reliability test/streaming test/e2e

lint: $(BIN)/golangci-lint ## golangci-lint with the repository's config, on every module
	@for m in $(LINT_MODULES); do \
		echo "golangci-lint: $$m"; \
		(cd $$m && $(CURDIR)/$(BIN)/golangci-lint run ./...) || exit 1; \
	done

bundle: deps ## build a busybox-static OCI bundle in build/bundle
	hack/mkbundle.sh build/bundle $(DEMO_ARGS)

demo: deps build bundle ## run a busybox container through gomon run
	$(GOMON) run --runtime $(RUNC) --bundle build/bundle demo-$$$$

e2e: build ## gomon as CRI-O's pod monitor with crictl, runc and Jaeger, on CRI-O v1.34 and v1.36 (root; tools cached in $(E2E_CACHE))
	E2E_SUITE=crictl E2E_CACHE=$(E2E_CACHE) E2E_FLAGS='$(E2E_FLAGS)' GO=$(GO) hack/e2e.sh $(CURDIR)/$(GOMON)

e2e-kubelet: build ## a static pod run by a real standalone kubelet v1.34 on CRI-O with gomon, traced into Jaeger (root)
	E2E_SUITE=kubelet E2E_CACHE=$(E2E_CACHE) E2E_FLAGS='$(E2E_FLAGS)' GO=$(GO) \
		GOMON_E2E_TRACE_SVG=$(if $(KUBELET_TRACE_SVG),$(abspath $(KUBELET_TRACE_SVG))) hack/e2e.sh $(CURDIR)/$(GOMON)

clean: ## remove build output
	rm -rf $(BIN) build

# `make bench`: gomon vs C conmon (apt's /usr/bin/conmon) vs bare runc, run by
# bench/cmd/gomon-bench in its own module. Results land in bench/results/.
CONMON      ?= /usr/bin/conmon
BENCH_FLAGS ?=
# The ratecost measure's baseline: gomon before issue 20's log work (order
# kept across streams, rate limit, whole long lines), built from git with
# the same flags as bin/gomon and cached in bin/. Without the git history
# it is skipped (with a message) and gomon-bench runs without -baseline.
BASELINE_COMMIT ?= 836b64a
BASELINE        := $(BIN)/gomon-$(BASELINE_COMMIT)
BASELINE_LDFLAGS := -s -w \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.tag=$(BASELINE_COMMIT)' \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.buildDate=$(BUILD_DATE)' \
	-X 'github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.commit=$(BASELINE_COMMIT)'

.PHONY: bench test-bench bench-baseline
bench-baseline: ## build the ratecost baseline bin/gomon-$(BASELINE_COMMIT) from git once (skipped without the history)
	@if [ -x $(BASELINE) ]; then exit 0; fi; \
	if ! git cat-file -e '$(BASELINE_COMMIT)^{commit}' 2>/dev/null; then \
		echo "bench: git commit $(BASELINE_COMMIT) is not available (no git history?): the ratecost baseline is skipped, issue 20's targets will not be checked"; \
		exit 0; \
	fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	echo "bench: building the ratecost baseline $(BASELINE) from git $(BASELINE_COMMIT)" && \
	git archive $(BASELINE_COMMIT) | tar -x -C "$$tmp" && \
	(cd "$$tmp" && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(BASELINE_LDFLAGS)" -o $(CURDIR)/$(BASELINE).tmp ./cmd/gomon) && \
	mv $(CURDIR)/$(BASELINE).tmp $(CURDIR)/$(BASELINE)

test-bench: build ## the bench harness's own tests (its driver tests need root, runc and apt's conmon)
	cd bench && $(GO) vet ./... && GOMON_BINARY=$(CURDIR)/$(GOMON) $(GO) test -count=1 ./...

bench: build bench-baseline ## benchmark gomon vs C conmon vs bare runc (root; BENCH_FLAGS=-quick for a 1-minute smoke run)
	@test -x $(CONMON) || { echo "installing conmon (apt-get install -y conmon)"; apt-get update -qq && apt-get install -y -qq conmon; }
	cd bench && CGO_ENABLED=0 $(GO) build -trimpath -o $(CURDIR)/$(BIN)/loggen ./cmd/loggen
	cd bench && $(GO) run ./cmd/gomon-bench -gomon $(CURDIR)/$(GOMON) -runc $(RUNC) -conmon $(CONMON) \
		-loggen $(CURDIR)/$(BIN)/loggen -out $(CURDIR)/bench/results \
		$$(test -x $(CURDIR)/$(BASELINE) && echo -baseline $(CURDIR)/$(BASELINE)) $(BENCH_FLAGS)
