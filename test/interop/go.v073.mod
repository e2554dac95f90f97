module github.com/gomon-dev/gomon/test/interop

go 1.26.0

require (
	github.com/blang/semver/v4 v4.0.0
	github.com/containers/conmon-rs v0.7.3
	github.com/gomon-dev/gomon/test/harness v0.0.0
	github.com/gomon-dev/gomon/test/interop/generation v0.0.0
	github.com/gorilla/websocket v1.5.4-0.20250319132907-e064f32e3674
	github.com/sirupsen/logrus v1.9.3
	go.podman.io/common v0.66.0
)

require (
	capnproto.org/go/capnp/v3 v3.1.0-alpha.2 // indirect
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	github.com/docker/go-units v0.5.0 // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/moby/sys/mountinfo v0.7.2 // indirect
	github.com/moby/sys/user v0.4.0 // indirect
	go.opentelemetry.io/auto/sdk v1.1.0 // indirect
	go.opentelemetry.io/otel v1.38.0 // indirect
	go.opentelemetry.io/otel/metric v1.38.0 // indirect
	go.opentelemetry.io/otel/trace v1.38.0 // indirect
	go.podman.io/storage v1.61.0 // indirect
	golang.org/x/net v0.45.0 // indirect
	golang.org/x/sync v0.17.0 // indirect
	golang.org/x/sys v0.37.0 // indirect
)

replace (
	github.com/gomon-dev/gomon/test/harness => ../harness
	github.com/gomon-dev/gomon/test/interop/generation => ./generation/v073
)
