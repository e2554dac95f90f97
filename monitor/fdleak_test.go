package monitor

import (
	"context"
	"os"
	"testing"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// TestNoFDLeak runs good and failing creates and checks the process holds
// no more fds afterwards.
func TestNoFDLeak(t *testing.T) {
	runc := monitortest.Runc(t)
	good := monitortest.Bundle(t, "echo", "hi")
	bad := monitortest.Bundle(t, "does-not-exist")
	round := func() {
		m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		p := newPaths(t)
		runToExit(t, m, p.request("fd-good", good))
		if _, err := m.CreateContainer(context.Background(), p.request("fd-bad", bad)); err == nil {
			t.Fatal("bad create succeeded")
		}
		tty := p.request("fd-tty", monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"true"}, Terminal: true}))
		tty.Terminal = true
		runToExit(t, m, tty)
		if err := m.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	round() // warm up: the runtime's poller and the like open fds once
	before := countFDs(t)
	round()
	if after := countFDs(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
