package exporter

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFlushSoonExportsBeforeTheTimer: with a batch timer far in the future,
// FlushSoon gets the queued spans to the collector at once.
func TestFlushSoonExportsBeforeTheTimer(t *testing.T) {
	c := &grpcCollector{}
	ep := startGRPCCollector(t, c)
	tr, err := Setup(context.Background(), Config{
		Mode: ModeOTLP, Endpoint: ep, SamplingRatePerMillion: 1_000_000,
		LookupEnv: mapEnv(nil), BatchTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	emit(tr.TracerProvider(), 3, "wait_for_exit_code", 0)
	tr.FlushSoon()
	// Generous, and far below the batch timer: only FlushSoon can do it.
	deadline := time.Now().Add(5 * time.Second)
	for (len(c.spans()) < 3 || tr.Exported() < 3) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(c.spans()); got != 3 || tr.Exported() != 3 {
		t.Fatalf("collector has %d spans, exported %d, 5 s after FlushSoon; want 3", got, tr.Exported())
	}
}

// TestFlushSoonNeverBlocksAndCoalesces: while an export hangs on a
// collector that never answers, FlushSoon returns at once however often it
// is called, and the calls coalesce into one more export (one batch: the
// batch size is the queue size here).
func TestFlushSoonNeverBlocksAndCoalesces(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var conns sync.WaitGroup
	stop := make(chan struct{})
	first := make(chan struct{})
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if accepted.Add(1) == 1 {
				close(first)
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				select { // a black hole until the test ends or the client gives up
				case <-stop:
				case <-time.After(time.Minute):
				}
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		close(stop)
		conns.Wait()
	})
	tr, err := Setup(context.Background(), Config{
		Mode: ModeOTLP, Endpoint: "http://" + l.Addr().String(),
		SamplingRatePerMillion: 1_000_000, LookupEnv: mapEnv(nil), BatchTimeout: time.Hour, ExportTimeout: time.Second, BatchSize: DefaultQueueSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	emit(tr.TracerProvider(), 1, "first", 0)
	tr.FlushSoon()
	select { // the export is now stuck for ExportTimeout
	case <-first:
	case <-time.After(10 * time.Second):
		_ = tr.Shutdown(context.Background())
		t.Fatal("FlushSoon started no export within 10 s")
	}
	for i := range 1000 {
		emit(tr.TracerProvider(), 1, "burst", i%2)
		tr.FlushSoon()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n > 2 {
		t.Errorf("%d exports for one stuck export and a burst of 1000 FlushSoon calls; want at most 2", n)
	}
	if tr.Dropped() != 1001 {
		t.Errorf("dropped = %d, want 1001", tr.Dropped())
	}
}

// TestBatchEnv: OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT set the
// batch timer and export timeout when Config leaves them zero; Config wins
// over them, and malformed values leave the defaults.
func TestBatchEnv(t *testing.T) {
	tests := []struct {
		name                string
		cfgDelay            time.Duration
		delay, timeout      string
		wantDelay, wantTime time.Duration
	}{
		{name: "unset", wantDelay: DefaultBatchTimeout, wantTime: DefaultExportTimeout},
		{name: "env", delay: "60000", timeout: "250", wantDelay: time.Minute, wantTime: 250 * time.Millisecond},
		{name: "config wins", cfgDelay: time.Second, delay: "60000", wantDelay: time.Second, wantTime: DefaultExportTimeout},
		{name: "malformed", delay: "soon", timeout: "-5", wantDelay: DefaultBatchTimeout, wantTime: DefaultExportTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			if tc.delay != "" {
				env["OTEL_BSP_SCHEDULE_DELAY"] = tc.delay
			}
			if tc.timeout != "" {
				env["OTEL_BSP_EXPORT_TIMEOUT"] = tc.timeout
			}
			var out syncBuf
			tr, err := Setup(context.Background(), Config{Mode: ModeStdout, Out: &out, LookupEnv: mapEnv(env), BatchTimeout: tc.cfgDelay})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tr.Shutdown(context.Background()) }()
			if tr.batch.interval != tc.wantDelay || tr.batch.exportTimout != tc.wantTime {
				t.Errorf("delay/timeout = %v/%v, want %v/%v", tr.batch.interval, tr.batch.exportTimout, tc.wantDelay, tc.wantTime)
			}
		})
	}
}
