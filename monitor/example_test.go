package monitor_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/gomon-dev/gomon/monitor"
)

// Example runs one container to completion through the embedding API. It
// needs root, runc and an OCI bundle (make one with hack/mkbundle.sh), so
// it has no checked output and only compiles under plain `go test`.
func Example() {
	ctx := context.Background()
	bundle := "/tmp/gomon-demo-bundle" // hack/mkbundle.sh /tmp/gomon-demo-bundle echo hello

	m, err := monitor.New(monitor.Config{Runtime: "/usr/sbin/runc", RuntimeRoot: "/run/gomon-example"})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = m.Shutdown(ctx) }() // kills what is left, waits for exit files

	_, err = m.CreateContainer(ctx, monitor.CreateRequest{
		ID:         "example",
		BundlePath: bundle,
		Cgroup:     monitor.Cgroupfs,
		ExitPaths:  []string{filepath.Join(bundle, "exit")},
		LogDrivers: []monitor.LogDriver{{Type: monitor.LogCRI, Path: filepath.Join(bundle, "ctr.log")}},
		Stdout:     os.Stdout, // stream the output too
		Stderr:     os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ctx, "example"); err != nil {
		log.Fatal(err)
	}
	st, err := m.Wait(ctx, "example") // returns once the exit file is written
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", st.Code, "oom killed", st.OOMKilled)
	if err := m.Delete(ctx, "example"); err != nil {
		log.Fatal(err)
	}
}
