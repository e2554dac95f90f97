package monitor

import (
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/ioloop"
)

// The bundle settings (io.gomon.* annotations, prefix removed) that
// override Config.LogRateLimit for one container.
const (
	settingRateLimit  = "log.rate-limit"
	settingRateBurst  = "log.rate-burst"
	settingRatePolicy = "log.rate-policy"
)

// logRateLimit returns the container's log rate limit: the node default
// (Config.LogRateLimit) with the bundle's settings applied. A setting that
// does not parse is logged and ignored (the node default stays): the
// container still starts, since refusing the create would turn a typo in
// an annotation into a pod stuck in CreateContainerError, for a setting
// that only protects the node's log disk.
func (m *Monitor) logRateLimit(settings map[string]string, logger *slog.Logger) ioloop.RateLimit {
	lim, err := ioloop.ParseRateLimit(m.cfg.LogRateLimit,
		settings[settingRateLimit], settings[settingRateBurst], settings[settingRatePolicy])
	if err != nil {
		logger.Warn("bad log rate limit annotation, using the node default for it", "error", err,
			"limit", lim.String())
	}
	return lim
}

// setRateLimit gives the container's Log its rate limiter, if it has a
// limit. Its events go to the read_loop span of their stream.
func (c *container) setRateLimit(lim ioloop.RateLimit) {
	if !lim.Enabled() {
		return
	}
	c.logger.Debug("log rate limit", "limit", lim.String())
	c.log.SetRateLimiter(ioloop.NewRateLimiter(lim, c.rateEvent))
}

// rateEvent records a drop episode's start or end on the stream's
// read_loop span. It runs on that stream's read loop, after startStream
// set the span.
func (c *container) rateEvent(s ioloop.Stream, ev ioloop.RateEvent) {
	span := c.loopSpan(s)
	if span == nil {
		return
	}
	if ev.Dropping {
		span.AddEvent("log_rate_limit.dropping")
		return
	}
	span.AddEvent("log_rate_limit.resumed", trace.WithAttributes(
		attribute.Int64("dropped_bytes", int64(ev.DroppedBytes)),
		attribute.Int64("duration_ms", ev.Duration.Milliseconds())))
}
