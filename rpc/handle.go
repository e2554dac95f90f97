package rpc

import (
	"context"
	"runtime/debug"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/internal/contain"
)

// order says whether a method lets the connection's next call be
// delivered before it has answered. capnp-go delivers one connection's
// calls one after another until a handler calls call.Go(), and the
// conmon-rs v1.0 client sends everything over a single connection, so a
// method that can wait must release it first (docs/architecture.md,
// "Never stall the RPC connection"). handle takes the choice as an
// argument, so no method can leave it out.
type order bool

const (
	// concurrent: call.Go() right after decoding, before anything that
	// can wait (a runtime, the pause process, a socket).
	concurrent order = true
	// inOrder: answered before the connection's next call is delivered,
	// for methods that never wait and whose order matters: window sizes
	// must apply in the order they were sent.
	inOrder order = false
)

// params is a generated method's parameters struct.
type params[Q any] interface {
	Request() (Q, error)
}

// serverCall is a generated method's call (proto.Conmon_createContainer,
// ...): its parameters, its results and Go.
type serverCall[P params[Q], Q, R any] interface {
	Args() P
	AllocResults() (R, error)
	Go()
}

// handle serves one call of a method, in the steps every method shares:
// read and decode the request (a malformed one fails before anything
// else), release the connection when ord is concurrent, start the
// method's span under the caller's trace context (see start) with attrs'
// attributes, run do, the backend call, and, when it succeeds, allocate
// the results and let answer fill them from v (answer may be nil when the
// response has no fields). A failure of do is recorded on the span;
// every error reaches the client through toException.
//
// A panic in any of these steps fails this call only: capnp-go runs
// methods on its own goroutines without recovering, so a panic here would
// end the daemon and, with it, every container of the pod. It is
// recovered, logged with its stack, counted (contain.RPC) and answered as
// a failed exception; the span records it. What the backend call was
// doing is left as its defers left it (docs/reliability.md, "Panics").
func handle[P params[Q], Q, D, V, R any](ctx context.Context, a *adapter, call serverCall[P, Q, R], ord order, name string,
	decode func(Q) (D, Metadata, error), attrs func(D) []attribute.KeyValue,
	do func(context.Context, D) (V, error), answer func(trace.Span, R, V) error,
) (err error) {
	defer func() {
		a.s.metrics.record(name, err)
		if a.s.afterCall != nil {
			a.s.afterCall()
		}
	}()
	var span trace.Span
	defer func() { // deferred first, so it ends the span after the panic is on it
		if span != nil {
			span.End()
		}
	}()
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		// The logger is made only here: With on every call would cost
		// an allocation per call.
		p := contain.Record(a.s.log.With("method", name), contain.RPC, v, debug.Stack())
		if span != nil {
			err = fail(span, p)
			return
		}
		err = toException(p)
	}()
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	d, md, err := decode(req)
	if err != nil {
		return toException(err)
	}
	if ord == concurrent {
		call.Go()
	}
	var kvs []attribute.KeyValue
	if attrs != nil {
		kvs = attrs(d)
	}
	ctx, span = a.start(ctx, name, md, kvs...)
	v, err := do(ctx, d)
	if err != nil {
		return fail(span, err)
	}
	res, err := call.AllocResults()
	if err != nil || answer == nil {
		return toException(err)
	}
	return toException(answer(span, res, v))
}

// idAttrs is the span attribute of methods about one container.
func idAttrs[D any](id func(D) string) func(D) []attribute.KeyValue {
	return func(d D) []attribute.KeyValue { return []attribute.KeyValue{containerID(id(d))} }
}

// none is the value of a backend call that returns nothing but an error.
type none struct{}

// noValue adapts a backend call that returns only an error to handle.
func noValue[D any](f func(context.Context, D) error) func(context.Context, D) (none, error) {
	return func(ctx context.Context, d D) (none, error) { return none{}, f(ctx, d) }
}
