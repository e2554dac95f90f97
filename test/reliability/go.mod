module github.com/gomon-dev/gomon/test/reliability

go 1.26.3

require (
	capnproto.org/go/capnp/v3 v3.1.0-alpha.2
	github.com/containers/conmon-rs v1.0.1
	github.com/gomon-dev/gomon/test/harness v0.0.0
	github.com/sirupsen/logrus v1.9.4
	go.opentelemetry.io/otel v1.43.0
	go.opentelemetry.io/otel/trace v1.43.0
	go.podman.io/common v0.66.2-0.20260126213724-1e46b0756b39
	golang.org/x/sys v0.43.0
)

require (
	github.com/blang/semver/v4 v4.0.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	github.com/docker/go-units v0.5.0 // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/moby/sys/mountinfo v0.7.2 // indirect
	github.com/moby/sys/user v0.4.0 // indirect
	go.opentelemetry.io/auto/sdk v1.2.1 // indirect
	go.opentelemetry.io/otel/metric v1.43.0 // indirect
	go.podman.io/storage v1.61.1-0.20251212224252-b0f86df5a665 // indirect
	golang.org/x/sync v0.20.0 // indirect
)

replace github.com/gomon-dev/gomon/test/harness => ../harness
