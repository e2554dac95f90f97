package rpc

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/gomon-dev/gomon/metrics"
	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
)

// TestRPCMetrics: with EnableMetrics every RPC is counted by method and
// outcome, an exception as an error; without it nothing is collected.
// The AfterEachCall hook runs once per answered call, failed or not.
func TestRPCMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "conmon.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	s := NewServer(&recorder{err: monitor.ErrNotFound}, testInfo, nil)
	s.EnableMetrics()
	var after atomic.Int32
	s.AfterEachCall(func() { after.Add(1) })
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	defer func() {
		must(t, s.Close())
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	c, err := net.Dial("unix", sock)
	must(t, err)
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
	defer func() { _ = conn.Close() }()
	ctx := context.Background()
	client := proto.Conmon(conn.Bootstrap(ctx))
	for range 2 {
		f, rel := client.Version(ctx, nil)
		_, err := f.Struct()
		rel()
		must(t, err)
	}
	f, rel := client.ReopenLogContainer(ctx, func(p proto.Conmon_reopenLogContainer_Params) error {
		r, err := p.NewRequest()
		if err == nil {
			err = r.SetId("ctr")
		}
		return err
	})
	if _, err := f.Struct(); err == nil {
		t.Fatal("reopen of an unknown container succeeded")
	}
	rel()
	// The hook runs before the answer is sent (a deferred step of the
	// method), so all three have run by now.
	if n := after.Load(); n != 3 {
		t.Errorf("AfterEachCall hook ran %d times for 3 calls", n)
	}

	b := metrics.NewBatch()
	s.CollectMetrics(b, metrics.Label{Key: "process.pid", Value: "1"})
	got := map[string]float64{}
	for _, f := range b.Families() {
		if f.Desc != MetricRequests {
			continue
		}
		for _, p := range f.Points {
			var method, outcome string
			for _, l := range p.Labels {
				switch l.Key {
				case "rpc.method":
					method = l.Value
				case "outcome":
					outcome = l.Value
				}
			}
			got[method+"/"+outcome] = p.Value
		}
	}
	want := map[string]float64{"version/ok": 2, "version/error": 0, "reopen_log_container/ok": 0, "reopen_log_container/error": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}

	off := NewServer(&recorder{}, testInfo, nil)
	b = metrics.NewBatch()
	off.CollectMetrics(b)
	if len(b.Families()) != 0 {
		t.Error("a server without EnableMetrics collected metrics")
	}
}
