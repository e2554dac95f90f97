package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
	"github.com/gomon-dev/gomon/rpc/protov0"
)

// syncBuffer is a bytes.Buffer safe for the exporter's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) spans(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("span line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// setupTracing installs an SDK for one test and restores the no-op
// globals after it.
func setupTracing(t *testing.T, cfg exporter.Config) *exporter.Tracing {
	t.Helper()
	tr, err := exporter.Setup(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})
	return tr
}

const (
	sampledParent   = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	unsampledParent = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00"
)

// TestSpansFollowTheCallersContext: the RPC span's parent is the
// traceparent in the request metadata, in both wire generations; a
// sampled-out parent yields no span.
func TestSpansFollowTheCallersContext(t *testing.T) {
	var out syncBuffer
	tr := setupTracing(t, exporter.Config{Mode: exporter.ModeStdout, Out: &out, SamplingRatePerMillion: 1_000_000})
	dial := serve(t, &recorder{})
	ctx := context.Background()
	conn := dial()

	v1 := proto.Conmon(conn.Bootstrap(ctx))
	f1, rel1 := v1.CreateContainer(ctx, func(p proto.Conmon_createContainer_Params) error {
		r, err := p.NewRequest()
		must(t, err)
		must(t, r.SetId("v1-ctr"))
		return r.SetMetadata(mapList(t, r.Segment(), map[string]string{"traceparent": sampledParent}))
	})
	_, err := f1.Struct()
	rel1()
	must(t, err)

	v0 := protov0.Conmon(conn.Bootstrap(ctx))
	for _, tp := range []string{sampledParent, unsampledParent} {
		f0, rel0 := v0.CreateContainer(ctx, func(p protov0.Conmon_createContainer_Params) error {
			r, err := p.NewRequest()
			must(t, err)
			must(t, r.SetId("v0-ctr"))
			must(t, r.SetMetadataOld([]byte(`{"traceparent":"`+tp+`"}`)))
			return r.SetMetadata(v0MapList(t, r.Segment(), map[string]string{"traceparent": tp}))
		})
		_, err := f0.Struct()
		rel0()
		must(t, err)
	}
	must(t, tr.ForceFlush(ctx))

	byContainer := map[string][]map[string]any{}
	for _, s := range out.spans(t) {
		if s["name"] != "create_container" {
			continue
		}
		attrs, _ := s["attributes"].(map[string]any)
		id, _ := attrs["container_id"].(string)
		byContainer[id] = append(byContainer[id], s)
	}
	for _, id := range []string{"v1-ctr", "v0-ctr"} {
		spans := byContainer[id]
		// v0-ctr was created twice; only the sampled call has a span.
		if len(spans) != 1 {
			t.Fatalf("%s: %d create_container spans, want 1 (the sampled call)", id, len(spans))
		}
		s := spans[0]
		if s["trace_id"] != "0af7651916cd43dd8448eb211c80319c" || s["parent_span_id"] != "b7ad6b7169203331" {
			t.Errorf("%s: span in trace %v under %v, want the caller's", id, s["trace_id"], s["parent_span_id"])
		}
		if s["kind"] != "server" {
			t.Errorf("%s: span kind %v", id, s["kind"])
		}
	}
}

// TestDeadCollectorCostsNothing: with the collector unreachable, 1000
// containers' worth of spans neither block the RPCs nor grow the heap; the
// exporter drops and counts them. (Latency is logged, not asserted: tests
// carry no timing assertions; make bench measures it.)
func TestDeadCollectorCostsNothing(t *testing.T) {
	// A server made before the SDK is installed keeps the no-op tracer:
	// the baseline for the latency figure.
	dialOff := serve(t, &forgetful{})
	tr := setupTracing(t, exporter.Config{
		Mode:                   exporter.ModeOTLP,
		Endpoint:               "http://127.0.0.1:1", // nothing listens on port 1
		SamplingRatePerMillion: 1_000_000,
		QueueSize:              256,
		BatchTimeout:           10 * time.Millisecond,
		ExportTimeout:          100 * time.Millisecond,
	})
	dial := serve(t, &forgetful{})
	ctx := context.Background()
	client := proto.Conmon(dial().Bootstrap(ctx))
	off := proto.Conmon(dialOff().Bootstrap(ctx))
	startOff := time.Now()
	for range 1000 {
		f, rel := off.CreateContainer(ctx, nil)
		_, err := f.Struct()
		rel()
		must(t, err)
	}
	t.Logf("1000 creates without tracing: %v per call", time.Since(startOff)/1000)
	create := func(i int) {
		f, rel := client.CreateContainer(ctx, func(p proto.Conmon_createContainer_Params) error {
			r, err := p.NewRequest()
			must(t, err)
			must(t, r.SetId("c"))
			return r.SetMetadata(mapList(t, r.Segment(), map[string]string{"traceparent": sampledParent}))
		})
		defer rel()
		_, err := f.Struct()
		must(t, err)
	}
	// A container's worth: its create plus the spans the monitor would
	// make (runtime, two read loops, the exit wait), here as siblings.
	tracer := otel.Tracer("test")
	heap := func() uint64 {
		// capnp-go's client side keeps a goroutine per answered question
		// for 250 ms before it sends Finish (rpc.go, handleReturn); let
		// those of the in-process client end first.
		time.Sleep(400 * time.Millisecond)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	round := func() {
		for i := range 1000 {
			create(i)
			for range 4 {
				_, sp := tracer.Start(ctx, "container_span")
				sp.End()
			}
		}
	}
	// The first round fills the exporter's bounded queue; a second one
	// must not need more memory.
	round()
	start := time.Now()
	round()
	t.Logf("1000 creates with a dead collector: %v per call; dropped %d spans so far", time.Since(start)/1000, tr.Dropped())
	if tr.Dropped() == 0 {
		t.Error("no span counted as dropped: were they exported somewhere?")
	}

	// Memory: the RPC system's own heap varies by megabytes from run to
	// run (in-process client included), so the exporter's share is
	// measured on spans alone, 1000 containers' worth (5 spans each) at a
	// time. The queue is bounded: more spans need no more memory.
	spans := func() {
		for range 5000 {
			_, sp := tracer.Start(ctx, "container_span")
			sp.End()
		}
	}
	spans()
	before := heap()
	for range 3 {
		spans()
	}
	after := heap()
	t.Logf("heap %d -> %d bytes over 3000 more containers' worth of spans", before, after)
	if after > before+512<<10 {
		t.Errorf("heap grew by %d bytes over 3000 containers' worth of spans to a dead collector", after-before)
	}
}

// forgetful is a Backend that keeps nothing, so heap growth is the
// server's and the exporter's alone.
type forgetful struct{ recorder }

func (*forgetful) CreateContainer(context.Context, monitor.CreateRequest) (uint32, error) {
	return 1, nil
}
