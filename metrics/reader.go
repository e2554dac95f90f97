package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Exporter sends or writes one collection. Export and Shutdown are called
// from the Reader's goroutine only, one at a time; Export is bounded by
// its ctx. The batch is the Reader's, reused for the next collection: an
// exporter must not keep it, or slices of it, after Export returns.
type Exporter interface {
	Export(ctx context.Context, b *Batch) error
	// Shutdown releases what the exporter holds (the textfile is removed);
	// no Export follows.
	Shutdown(ctx context.Context) error
}

// Collector fills a batch with the current values of its metrics. It is
// called from the Reader's goroutine and must not block.
type Collector func(b *Batch)

// DefaultInterval is the export interval without OTEL_METRIC_EXPORT_INTERVAL.
const DefaultInterval = time.Minute

// DefaultExportTimeout bounds one export without OTEL_METRIC_EXPORT_TIMEOUT.
const DefaultExportTimeout = 5 * time.Second

// Reader collects every Interval and hands the batch to each exporter,
// and does so once more at Shutdown. It owns one goroutine.
type Reader struct {
	collect   []Collector
	exporters []Exporter
	interval  time.Duration
	timeout   time.Duration
	logger    *slog.Logger
	after     func() // nil: nothing

	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	shutErr error
	failing []bool // per exporter; only the goroutine (then Shutdown) uses it
	// batch is collected into again at every export; only the goroutine
	// (then Shutdown) uses it.
	batch *Batch
}

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Collectors []Collector
	Exporters  []Exporter
	Interval   time.Duration // 0: DefaultInterval
	Timeout    time.Duration // one export; 0: DefaultExportTimeout
	Logger     *slog.Logger  // export failures; nil discards
	// AfterExport, when set, is called after every periodic export (the
	// daemon counts an export as work, as it does a call).
	AfterExport func()
}

// StartReader starts the reader's goroutine. The first export happens
// after one interval.
func StartReader(cfg ReaderConfig) *Reader {
	r := &Reader{
		collect:   cfg.Collectors,
		exporters: cfg.Exporters,
		interval:  cfg.Interval,
		timeout:   cfg.Timeout,
		logger:    cfg.Logger,
		after:     cfg.AfterExport,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		failing:   make([]bool, len(cfg.Exporters)),
		batch:     NewBatch(),
	}
	if r.interval <= 0 {
		r.interval = DefaultInterval
	}
	if r.timeout <= 0 {
		r.timeout = DefaultExportTimeout
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	go r.run()
	return r
}

func (r *Reader) run() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
			_ = r.export(ctx) // logged there
			cancel()
			if r.after != nil {
				r.after()
			}
		}
	}
}

// Collect returns a new batch with every collector's current values.
// The collectors must not be running for an export meanwhile (they are
// never called concurrently): it is for tests.
func (r *Reader) Collect() *Batch {
	b := NewBatch()
	r.collectInto(b)
	return b
}

func (r *Reader) collectInto(b *Batch) {
	for _, c := range r.collect {
		c(b)
	}
}

// export collects into the reader's batch, reset, and hands it to every
// exporter: after the first collection, the batch's memory is reused. A
// failure is logged once when an exporter starts failing and once when it
// recovers.
func (r *Reader) export(ctx context.Context) error {
	b := r.batch
	b.reset()
	r.collectInto(b)
	var errs []error
	for i, e := range r.exporters {
		err := e.Export(ctx, b)
		switch {
		case err != nil && !r.failing[i]:
			r.logger.Warn("metrics export failing", "exporter", fmt.Sprintf("%T", e), "error", err)
		case err == nil && r.failing[i]:
			r.logger.Info("metrics export recovered", "exporter", fmt.Sprintf("%T", e))
		}
		r.failing[i] = err != nil
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Shutdown stops the goroutine, exports a last time and shuts the
// exporters down, all bounded by ctx. Later calls return the first
// call's result.
func (r *Reader) Shutdown(ctx context.Context) error {
	r.once.Do(func() {
		close(r.stop)
		select {
		case <-r.done:
		case <-ctx.Done():
			r.shutErr = fmt.Errorf("stop metrics reader: %w", ctx.Err())
			return
		}
		var errs []error
		if err := r.export(ctx); err != nil {
			errs = append(errs, fmt.Errorf("last metrics export: %w", err))
		}
		for _, e := range r.exporters {
			if err := e.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		r.shutErr = errors.Join(errs...)
	})
	return r.shutErr
}
