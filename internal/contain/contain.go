// Package contain recovers a panic in a piece of gomon's work that can
// fail on its own (one RPC call, one streaming session, one attach or
// fd-socket connection, one span export), so that a bug in it costs that
// piece and never the daemon: a crashed daemon takes every container of
// its pod with it. docs/reliability.md ("Panics") lists, per goroutine
// kind, whether its panics are recovered and what happens then.
//
// A recovered panic is logged at error level with its stack and counted,
// per kind, in process-wide counters (one daemon per process), which
// Panics and PanicsOf read for metrics.
package contain

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

// Kind is the kind of work a recovered panic happened in. The set is
// fixed, so the counters are bounded.
type Kind int

// The kinds of work whose panics are recovered.
const (
	RPC      Kind = iota // one Cap'n Proto call
	Stream               // one streaming session (exec, attach, port-forward) or its handshake
	Attach               // one attach-socket connection
	FDStore              // one fd-socket connection
	Exporter             // one span export
	ReadLoop             // a container's read loop
	Waiter               // a container's waiter (exit handling)
	OOMWatch             // a container's OOM watcher
	Input                // a copier of a container's stdin
	numKinds
)

var kindNames = [numKinds]string{"rpc", "stream", "attach", "fdstore", "exporter", "read_loop", "waiter", "oom_watch", "input"}

// String returns the kind's name, as it appears in logs and metrics.
func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Kinds returns every kind, for exporting one counter per kind.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

var counts [numKinds]atomic.Uint64

// Panics returns how many panics this process has recovered, all kinds
// together. Safe for concurrent use.
func Panics() uint64 {
	var n uint64
	for i := range counts {
		n += counts[i].Load()
	}
	return n
}

// PanicsOf returns how many panics of kind k this process has recovered.
// Safe for concurrent use.
func PanicsOf(k Kind) uint64 {
	if k < 0 || k >= numKinds {
		return 0
	}
	return counts[k].Load()
}

// PanicError is a recovered panic.
type PanicError struct {
	Kind  Kind
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error: %s panicked: %v", e.Kind, e.Value)
}

// Unwrap returns the panic value when it is an error (a runtime error,
// say), so errors.As reaches it.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Recover recovers a panic of the goroutine that deferred it, counts it
// under k, logs it on log (nil: not logged) with its stack, and passes it
// to then (nil: nothing more). Without a panic it does nothing. It must be
// the deferred call itself, "defer contain.Recover(log, k, then)": called
// from inside another deferred function, recover sees no panic and the
// panic goes on.
//
// then runs after the counter went up and the log was written, so what it
// does (fail the call, close the session, write an exit file) comes last.
// A panic in then is not recovered.
func Recover(log *slog.Logger, k Kind, then func(*PanicError)) {
	v := recover()
	if v == nil {
		return
	}
	p := Record(log, k, v, debug.Stack())
	if then != nil {
		then(p)
	}
}

// Record counts and logs a panic that the caller recovered itself, with
// value v and stack, and returns it as a PanicError.
func Record(log *slog.Logger, k Kind, v any, stack []byte) *PanicError {
	if k >= 0 && k < numKinds {
		counts[k].Add(1)
	}
	p := &PanicError{Kind: k, Value: v, Stack: stack}
	if log != nil {
		log.LogAttrs(context.Background(), slog.LevelError, "recovered from a panic; only the work it happened in failed",
			slog.String("kind", k.String()), slog.String("panic", fmt.Sprint(v)),
			slog.String("stack", string(stack)))
	}
	return p
}
