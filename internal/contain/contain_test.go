package contain

import (
	"bytes"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

func TestRecoverCountsLogsAndHandsOver(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	before, beforeAll := PanicsOf(Stream), Panics()
	var got *PanicError
	func() {
		defer Recover(log, Stream, func(p *PanicError) { got = p })
		panicHere()
	}()
	if got == nil || got.Kind != Stream || got.Value != "boom" {
		t.Fatalf("handed over %+v, want the stream panic", got)
	}
	if PanicsOf(Stream) != before+1 || Panics() != beforeAll+1 {
		t.Errorf("counters: stream %d→%d, all %d→%d; want +1 each", before, PanicsOf(Stream), beforeAll, Panics())
	}
	out := buf.String()
	for _, want := range []string{`"level":"ERROR"`, `"kind":"stream"`, `"panic":"boom"`, "panicHere"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %s lacks %s", out, want)
		}
	}
}

func panicHere() { panic("boom") }

func TestRecoverWithoutPanic(t *testing.T) {
	before := Panics()
	called := false
	func() {
		defer Recover(nil, RPC, func(*PanicError) { called = true })
	}()
	if called || Panics() != before {
		t.Fatal("Recover acted without a panic")
	}
}

func TestPanicErrorUnwrapsRuntimeErrors(t *testing.T) {
	var p *PanicError
	func() {
		defer Recover(nil, RPC, func(e *PanicError) { p = e })
		var s []int
		s[len(t.Name())]++ // index out of range: a runtime.Error
	}()
	var re runtime.Error
	if !errors.As(p, &re) {
		t.Fatalf("%v does not unwrap to a runtime.Error", p)
	}
}

func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds() {
		n := k.String()
		if n == "" || seen[n] || strings.HasPrefix(n, "kind(") {
			t.Errorf("kind %d has name %q", int(k), n)
		}
		seen[n] = true
	}
	if got := Kind(99).String(); got != "kind(99)" {
		t.Errorf("unknown kind is %q", got)
	}
}
