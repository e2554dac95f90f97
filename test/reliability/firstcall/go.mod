module github.com/gomon-dev/gomon/test/reliability/firstcall

go 1.26.0

require (
	github.com/containers/conmon-rs v0.6.6
	github.com/gomon-dev/gomon/test/harness v0.0.0
	github.com/sirupsen/logrus v1.9.3
)

require (
	capnproto.org/go/capnp/v3 v3.0.1-alpha.2 // indirect
	github.com/blang/semver/v4 v4.0.0 // indirect
	github.com/colega/zeropool v0.0.0-20230505084239-6fb4a4f75381 // indirect
	github.com/containers/common v0.60.2 // indirect
	github.com/containers/storage v1.55.0 // indirect
	github.com/docker/go-units v0.5.0 // indirect
	github.com/go-logr/logr v1.4.2 // indirect
	github.com/go-logr/stdr v1.2.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/moby/sys/mountinfo v0.7.2 // indirect
	github.com/moby/sys/user v0.2.0 // indirect
	go.opentelemetry.io/otel v1.29.0 // indirect
	go.opentelemetry.io/otel/metric v1.29.0 // indirect
	go.opentelemetry.io/otel/trace v1.29.0 // indirect
	golang.org/x/sync v0.8.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/gomon-dev/gomon/test/harness => ../../harness
