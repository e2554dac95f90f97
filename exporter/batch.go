package exporter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/gomon-dev/gomon/internal/contain"
)

// batcher is gomon's batch span processor. It does what the SDK's
// BatchSpanProcessor does (bounded queue, size- and time-triggered batches,
// one exporting goroutine) and additionally counts exactly what it drops,
// which the SDK processor keeps private:
//
//   - OnEnd never blocks: a full queue drops the span and counts it;
//   - a failed export counts the whole batch as dropped (no retries: a monitor
//     must not pile up telemetry for a dead collector);
//   - spans still queued when Shutdown's context ends are counted as dropped;
//   - the timer only runs while a batch is pending, so an idle daemon has no
//     periodic wake-ups;
//   - FlushSoon asks for an export of everything queued without waiting
//     for it (a container's spans when it exits, before the kubelet may
//     SIGKILL the pod's processes); requests made while one is pending
//     coalesce into it;
//   - a panic in the exporter (a bug, or a collector's answer that trips
//     one) is recovered: the batch is dropped and counted, the panic is
//     logged with its stack, and the goroutine carries on.
type batcher struct {
	exp          sdktrace.SpanExporter
	queue        chan sdktrace.ReadOnlySpan
	maxBatch     int
	interval     time.Duration
	exportTimout time.Duration
	onError      func(error)

	flush    chan chan struct{}
	kick     chan struct{} // FlushSoon; buffered 1 so requests coalesce
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	runCtx   context.Context // parent of every export; cancelled when Shutdown's ctx ends
	cancel   context.CancelFunc

	dropped  atomic.Uint64
	exported atomic.Uint64
	panics   atomic.Uint64
}

var _ sdktrace.SpanProcessor = (*batcher)(nil)

func newBatcher(exp sdktrace.SpanExporter, queueSize, maxBatch int, interval, exportTimeout time.Duration, onError func(error)) *batcher {
	b := &batcher{
		exp:          exp,
		queue:        make(chan sdktrace.ReadOnlySpan, queueSize),
		maxBatch:     min(maxBatch, queueSize),
		interval:     interval,
		exportTimout: exportTimeout,
		onError:      onError,
		flush:        make(chan chan struct{}),
		kick:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
	}
	b.runCtx, b.cancel = context.WithCancel(context.Background())
	go b.run()
	return b
}

// OnStart does nothing.
func (b *batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span without ever blocking.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if b.closed.Load() {
		b.dropped.Add(1)
		return
	}
	select {
	case b.queue <- s:
	default:
		b.dropped.Add(1)
	}
}

// ForceFlush exports everything queued so far and waits for it, bounded by ctx.
func (b *batcher) ForceFlush(ctx context.Context) error {
	if b.closed.Load() {
		return nil
	}
	ack := make(chan struct{})
	select {
	case b.flush <- ack:
	case <-b.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush spans: %w", ctx.Err())
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush spans: %w", ctx.Err())
	}
}

// FlushSoon asks the goroutine to export everything queued now, without
// waiting: it never blocks, whatever the collector does. The export starts
// as soon as the one in flight (if any) ends.
func (b *batcher) FlushSoon() {
	select {
	case b.kick <- struct{}{}:
	default: // one is pending: it will take these spans too
	}
}

// Shutdown exports what is queued (bounded by ctx), stops the goroutine and
// shuts the exporter down. Idempotent.
func (b *batcher) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.closed.Store(true)
		// When ctx ends, the in-flight export and the final drain are cut
		// short; the goroutine then counts the rest as dropped and exits.
		release := context.AfterFunc(ctx, b.cancel)
		close(b.stop)
		<-b.done
		release()
		b.cancel()
	})
	<-b.done
	if err := b.shutdownExporter(ctx); err != nil {
		return fmt.Errorf("shut down span exporter: %w", err)
	}
	return nil
}

func (b *batcher) run() {
	defer close(b.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, b.maxBatch)
	timer := time.NewTimer(b.interval)
	timer.Stop()
	armed := false
	exportBatch := func(ctx context.Context) {
		if armed {
			timer.Stop()
			armed = false
		}
		if len(batch) == 0 {
			return
		}
		b.export(ctx, batch)
		clear(batch) // let the spans be collected
		batch = batch[:0]
	}
	for {
		select {
		case s := <-b.queue:
			batch = append(batch, s)
			if len(batch) >= b.maxBatch {
				exportBatch(b.runCtx)
			} else if !armed {
				timer.Reset(b.interval)
				armed = true
			}
		case <-timer.C:
			armed = false
			exportBatch(b.runCtx)
		case <-b.kick:
			b.drain(b.runCtx, &batch, exportBatch)
		case ack := <-b.flush:
			b.drain(b.runCtx, &batch, exportBatch)
			close(ack)
		case <-b.stop:
			b.drain(b.runCtx, &batch, exportBatch)
			b.dropQueued() // spans that raced with Shutdown
			timer.Stop()
			return
		}
	}
}

// drain exports the pending batch and the spans queued when it was called.
// If ctx ends first, whatever is left is counted as dropped.
func (b *batcher) drain(ctx context.Context, batch *[]sdktrace.ReadOnlySpan, exportBatch func(context.Context)) {
	for n := len(b.queue); n > 0 && ctx.Err() == nil; n-- {
		*batch = append(*batch, <-b.queue)
		if len(*batch) >= b.maxBatch {
			exportBatch(ctx)
		}
	}
	if ctx.Err() == nil {
		exportBatch(ctx)
		return
	}
	b.dropped.Add(uint64(len(*batch)))
	clear(*batch)
	*batch = (*batch)[:0]
	b.dropQueued()
}

// dropQueued empties the queue, counting every span as dropped.
func (b *batcher) dropQueued() {
	for {
		select {
		case <-b.queue:
			b.dropped.Add(1)
		default:
			return
		}
	}
}

func (b *batcher) export(ctx context.Context, batch []sdktrace.ReadOnlySpan) {
	if b.exportTimout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.exportTimout)
		defer cancel()
	}
	err := b.callExporter(ctx, batch)
	n := uint64(len(batch))
	var partial *PartialSuccessError
	switch {
	case err == nil:
		b.exported.Add(n)
		return
	case errors.As(err, &partial):
		rej := uint64(min(max(partial.Rejected, 0), int64(n))) //nolint:gosec // clamped
		b.exported.Add(n - rej)
		b.dropped.Add(rej)
	default:
		b.dropped.Add(n)
	}
	if b.onError != nil {
		b.onError(err)
	}
}

// callExporter runs the exporter, turning a panic into an ExportPanicError:
// a bug or a hostile collector must cost one batch, never the daemon. The
// panic is counted here and in the daemon's count (contain.Exporter); it
// is logged, with its stack, by the error handler (errorHandler), which
// rate-limits it.
func (b *batcher) callExporter(ctx context.Context, batch []sdktrace.ReadOnlySpan) (err error) {
	defer contain.Recover(nil, contain.Exporter, func(p *contain.PanicError) {
		b.panics.Add(1)
		err = &ExportPanicError{Value: p.Value, Stack: string(p.Stack)}
	})
	return b.exp.ExportSpans(ctx, batch)
}

// shutdownExporter shuts the exporter down; a panic in it is an error
// like a failed export's (see callExporter), as the daemon's shutdown
// must go on to end its containers' monitoring cleanly.
func (b *batcher) shutdownExporter(ctx context.Context) (err error) {
	defer contain.Recover(nil, contain.Exporter, func(p *contain.PanicError) {
		b.panics.Add(1)
		err = &ExportPanicError{Value: p.Value, Stack: string(p.Stack)}
	})
	return b.exp.Shutdown(ctx)
}

// ExportPanicError is a panic recovered from a span export; the batch was
// dropped. Stack is the panicking goroutine's stack.
type ExportPanicError struct {
	Value any
	Stack string
}

func (e *ExportPanicError) Error() string {
	return fmt.Sprintf("span export panicked: %v", e.Value)
}
