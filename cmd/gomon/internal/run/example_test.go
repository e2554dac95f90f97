package run_test

import (
	"context"
	"log"
	"os"

	"github.com/gomon-dev/gomon/cmd/gomon/internal/run"
)

// ExampleRun is what `gomon run` does: one container in the foreground.
func ExampleRun() {
	code, err := run.Run(context.Background(), run.Options{
		Bundle: "/tmp/gomon-demo-bundle",
	})
	if err != nil {
		log.Fatal(err)
	}
	os.Exit(code)
}
