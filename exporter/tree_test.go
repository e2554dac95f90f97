package exporter

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

var update = flag.Bool("update", false, "rewrite golden files")

func stub(name string, tid trace.TraceID, id, parent byte, start, end time.Duration, attrs ...attribute.KeyValue) tracetest.SpanStub {
	s := tracetest.SpanStub{
		Name:        name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{7: id}, TraceFlags: trace.FlagsSampled}),
		StartTime:   epoch.Add(start),
		EndTime:     epoch.Add(end),
		Attributes:  attrs,
	}
	if parent != 0 {
		s.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{7: parent}, TraceFlags: trace.FlagsSampled})
	}
	return s
}

func TestRenderTreeGolden(t *testing.T) {
	ms := time.Millisecond
	failed := stub("exec_sync_container", tid2, 20, 0, 0, 3*ms, attribute.String("container_id", "abc"))
	failed.Status = sdktrace.Status{Code: codes.Error, Description: "command not found"}
	orphan := stub("read_loop", tid2, 21, 99, ms, 2*ms, attribute.Int("bytes", 512)) // parent not recorded
	spans := tracetest.SpanStubs{
		// Deliberately out of order: RenderTree sorts by start time.
		stub("wait_for_exit_code", tid1, 4, 2, 60*ms, 100*ms, attribute.Int("exit_code", 0), attribute.String("ignored", "x")),
		stub("create_container", tid1, 1, 0, 0, 100*ms, attribute.String("container_id", "0123456789ab"), attribute.String("uuid", "u")),
		stub("promise", tid1, 2, 1, 10*ms, 100*ms),
		stub("runtime create", tid1, 3, 2, 10*ms, 50*ms, attribute.Int("pid", 4242), attribute.String("container_id", "0123456789ab")),
		stub("stdout", tid1, 5, 2, 50*ms, 99*ms, attribute.Int64("bytes", 1<<20)),
		stub("write_exit_path", tid1, 6, 4, 99*ms+900*time.Microsecond, 100*ms),
		failed, orphan,
	}.Snapshots()
	var buf bytes.Buffer
	if err := RenderTree(&buf, spans); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "tree.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRenderTreeGolden -update)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("RenderTree output differs from %s\n got:\n%s\nwant:\n%s", golden, buf.String(), want)
	}
}

func TestRenderTreeEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := RenderTree(&buf, nil); err != nil || buf.Len() != 0 {
		t.Errorf("empty render: %q, %v", buf.String(), err)
	}
}
