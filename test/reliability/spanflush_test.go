package reliability

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"golang.org/x/sys/unix"
)

// otlpSpan is what the test reads of a received span.
type otlpSpan struct {
	name  string
	strs  map[string]string
	ints  map[string]int64
	trace []byte
	// id and parent are the span's and its parent's span IDs (parent
	// empty for a root span).
	id, parent []byte
}

// otlpHTTPReceiver is a real OTLP/HTTP trace receiver: it accepts
// ExportTraceServiceRequest POSTs on /v1/traces and decodes the spans.
type otlpHTTPReceiver struct {
	mu    sync.Mutex
	spans []otlpSpan
	err   error
}

func startOTLPHTTPReceiver(t *testing.T) (*otlpHTTPReceiver, string) {
	t.Helper()
	r := &otlpHTTPReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
		if err == nil && (req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf") {
			err = fmt.Errorf("unexpected %s %s (%s)", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
		}
		var spans []otlpSpan
		if err == nil {
			spans, err = decodeExportRequest(body)
		}
		r.mu.Lock()
		r.spans = append(r.spans, spans...)
		r.err = errors.Join(r.err, err)
		r.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL + "/v1/traces"
}

// find returns the spans named name with container_id id, and any decode error.
func (r *otlpHTTPReceiver) find(name, id string) ([]otlpSpan, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpSpan
	for _, s := range r.spans {
		if s.name == name && s.strs["container_id"] == id {
			out = append(out, s)
		}
	}
	return out, r.err
}

// walkProto calls fn for every field of one protobuf message: v holds a
// length-delimited field's bytes, x a varint's value.
func walkProto(b []byte, fn func(num uint64, v []byte, x uint64) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		num, typ := key>>3, key&7
		switch typ {
		case 0:
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
			if err := fn(num, nil, x); err != nil {
				return err
			}
		case 1, 5:
			size := 8
			if typ == 5 {
				size = 4
			}
			if len(b) < size {
				return errors.New("short fixed field")
			}
			b = b[size:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errors.New("bad length")
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			if err := fn(num, v, 0); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wire type %d", typ)
		}
	}
	return nil
}

// decodeExportRequest extracts the spans of an ExportTraceServiceRequest
// (resource_spans=1 > scope_spans=2 > spans=2; span trace_id=1,
// span_id=2, parent_span_id=4, name=5,
// attributes=9 as KeyValue{key=1, value=AnyValue{string_value=1, int_value=3}}).
func decodeExportRequest(b []byte) ([]otlpSpan, error) {
	var out []otlpSpan
	span := func(v []byte) error {
		s := otlpSpan{strs: map[string]string{}, ints: map[string]int64{}}
		err := walkProto(v, func(num uint64, v []byte, _ uint64) error {
			switch num {
			case 1:
				s.trace = v
			case 2:
				s.id = v
			case 4:
				s.parent = v
			case 5:
				s.name = string(v)
			case 9:
				var key string
				var val []byte
				if err := walkProto(v, func(num uint64, v []byte, _ uint64) error {
					switch num {
					case 1:
						key = string(v)
					case 2:
						val = v
					}
					return nil
				}); err != nil {
					return err
				}
				return walkProto(val, func(num uint64, v []byte, x uint64) error {
					switch num {
					case 1:
						s.strs[key] = string(v)
					case 3:
						s.ints[key] = int64(x) // two's complement, as protobuf int64
					}
					return nil
				})
			}
			return nil
		})
		out = append(out, s)
		return err
	}
	err := walkProto(b, func(num uint64, v []byte, _ uint64) error {
		if num != 1 {
			return nil
		}
		return walkProto(v, func(num uint64, v []byte, _ uint64) error {
			if num != 2 {
				return nil
			}
			return walkProto(v, func(num uint64, v []byte, _ uint64) error {
				if num != 2 {
					return nil
				}
				return span(v)
			})
		})
	})
	return out, err
}

// tracedGomon starts a daemon through the client with tracing on to a
// real OTLP/HTTP receiver and the batch timer a minute away, so only a
// flush gets spans out in time. The caller adopts (or kills) the daemon.
func tracedGomon(t *testing.T) (*otlpHTTPReceiver, *client.ConmonServerConfig, *client.ConmonClient) {
	t.Helper()
	recv, endpoint := startOTLPHTTPReceiver(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
	cfg := serverConfig(t, runcPath(t))
	cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: endpoint}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return recv, cfg, cl
}

// TestSpansOutliveKubeletKill reproduces the kubelet's pod cleanup: about a
// second after a pod's last container stops, every process in the pod's
// cgroup is SIGKILLed, gomon included. The container's read_loop and
// wait_for_exit_code spans must already be at the collector by then,
// although the batch timer (OTEL_BSP_SCHEDULE_DELAY) is a minute away.
func TestSpansOutliveKubeletKill(t *testing.T) {
	requireRoot(t)
	recv, cfg, cl := tracedGomon(t)
	// Not adoptGomon: this daemon is killed, not shut down.
	s := &gomonServer{client: cl, pid: int(cl.PID()), runDir: cfg.ServerRunDir, runtimeRoot: cfg.RuntimeRoot, exited: make(chan struct{})}
	go s.reap()
	t.Cleanup(func() {
		_ = unix.Kill(s.pid, unix.SIGKILL) // our own daemon; ESRCH once killed
		<-s.exited
	})

	c := running(t, s, nil, "sh", "-c", "echo out; echo err >&2; exit 3")
	if code := c.exitCode(t); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	// The kubelet's cleanup comes 1-2 s after the stop: the later end, as
	// the flush competes for a loaded machine's CPU like any other work.
	time.Sleep(2 * time.Second)
	if err := unix.Kill(s.pid, unix.SIGKILL); err != nil {
		t.Fatalf("kill gomon: %v", err)
	}
	<-s.exited

	// Only requests that completed before the kill count; give the
	// receiver's handlers a moment to record them.
	var loops, waits []otlpSpan
	var err error
	deadline := time.Now().Add(2 * time.Second)
	for {
		loops, err = recv.find("read_loop", c.id)
		waits, _ = recv.find("wait_for_exit_code", c.id)
		if err != nil {
			t.Fatalf("receiver: %v", err)
		}
		if (len(loops) == 2 && len(waits) == 1) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(loops) != 2 || len(waits) != 1 {
		t.Fatalf("after the kill the collector has %d read_loop and %d wait_for_exit_code spans of %s; want 2 and 1",
			len(loops), len(waits), c.id)
	}
	if got := waits[0].ints["exit_code"]; got != 3 {
		t.Errorf("wait_for_exit_code exit_code = %d, want 3", got)
	}
	if got := loops[0].ints["bytes"] + loops[1].ints["bytes"]; got != int64(len("out\nerr\n")) {
		t.Errorf("read_loop spans count %d bytes, want %d", got, len("out\nerr\n"))
	}
}

// TestShutdownFlushesSpans: on SIGINT (CRI-O's stop) or SIGTERM (a
// service manager's) the daemon kills the pod's containers and exports
// their spans before it exits, within its bounded flush, with the batch
// timer a minute away.
func TestShutdownFlushesSpans(t *testing.T) {
	for _, sig := range []unix.Signal{unix.SIGINT, unix.SIGTERM} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			requireRoot(t)
			recv, cfg, cl := tracedGomon(t)
			pid := int(cl.PID())
			s := adoptGomonWith(t, cl, cfg, func() error { return unix.Kill(pid, sig) })
			c := running(t, s, nil, "sh", "-c", "echo up; exec sleep 600")
			s.stop(t) // checks exit status 0 and conmon.sock gone
			waits, err := recv.find("wait_for_exit_code", c.id)
			if err != nil {
				t.Fatalf("receiver: %v", err)
			}
			if len(waits) != 1 {
				t.Fatalf("after shutdown the collector has %d wait_for_exit_code spans of %s, want 1", len(waits), c.id)
			}
			if got := waits[0].ints["exit_code"]; got != 137 {
				t.Errorf("wait_for_exit_code exit_code = %d, want 137 (killed by the shutdown)", got)
			}
			if loops, _ := recv.find("read_loop", c.id); len(loops) != 2 {
				t.Errorf("after shutdown the collector has %d read_loop spans, want 2", len(loops))
			}
		})
	}
}
