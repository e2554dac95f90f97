package ioloop

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Log rate limiting (docs/reliability.md, "Limits"): one token bucket per
// container, in bytes, shared by its stdout and stderr read loops, which
// take from it for every chunk they hand to the container's Log. Attach
// clients and other tee writers are not limited, and exec sessions have no
// Log, so they never are.
//
// With the drop policy a loop keeps draining the pipe at full speed and
// does not hand the Log what exceeds the budget; the first chunk it logs
// after such a gap is preceded by a marker record that says how many bytes
// are missing. With the block policy a loop does not read more than the
// budget allows, so the container's writes block once its pipe is full.

// RatePolicy is what a rate-limited container's read loops do with output
// beyond the budget.
type RatePolicy uint8

const (
	// RateDrop discards it from the log (the zero value, the default).
	RateDrop RatePolicy = iota
	// RateBlock stops reading the container's pipe until the budget
	// allows, which blocks the container's writes.
	RateBlock
)

// String returns "drop", "block" or "RatePolicy(N)".
func (p RatePolicy) String() string {
	switch p {
	case RateDrop:
		return "drop"
	case RateBlock:
		return "block"
	default:
		return "RatePolicy(" + strconv.Itoa(int(p)) + ")"
	}
}

// ParseRatePolicy parses "drop" or "block".
func ParseRatePolicy(s string) (RatePolicy, error) {
	switch strings.TrimSpace(s) {
	case "drop":
		return RateDrop, nil
	case "block":
		return RateBlock, nil
	}
	return 0, fmt.Errorf("rate policy %q: want drop or block: %w", s, ErrInvalidRate)
}

// ErrInvalidRate reports a rate, size or policy that cannot be parsed or
// is out of bounds.
var ErrInvalidRate = errors.New("invalid log rate limit")

// MinRate is the smallest rate limit: it bounds how long a read loop
// sleeps for its budget under the block policy (blockMinRead / MinRate, 4
// s), and so how late a stopped container's loop notices the drain
// policy's stop (see container.go in package monitor).
const MinRate = 1 << 10

// blockMinRead is the budget a blocked read loop waits for before it reads
// again (or the whole burst, if smaller): waking for every few bytes the
// bucket gains would cost a read per line under a tight limit.
const blockMinRead = 4 << 10

// RateLimit is a log rate limit. The zero value is no limit.
type RateLimit struct {
	// Rate is the budget in bytes per second; 0 means no limit, else at
	// least MinRate.
	Rate uint64
	// Burst is the bucket's size in bytes: how much may be logged at once
	// after a quiet time. 0 means one second of Rate.
	Burst  uint64
	Policy RatePolicy
}

// Enabled reports whether l limits anything.
func (l RateLimit) Enabled() bool { return l.Rate > 0 }

// BurstBytes returns the effective burst: Burst, or one second of Rate.
func (l RateLimit) BurstBytes() uint64 {
	if l.Burst == 0 {
		return l.Rate
	}
	return l.Burst
}

// Validate reports a rate below MinRate or an unknown policy.
func (l RateLimit) Validate() error {
	if l.Rate != 0 && l.Rate < MinRate {
		return fmt.Errorf("rate %d B/s is below the minimum of %d B/s: %w", l.Rate, MinRate, ErrInvalidRate)
	}
	if l.Policy != RateDrop && l.Policy != RateBlock {
		return fmt.Errorf("rate policy %s: %w", l.Policy, ErrInvalidRate)
	}
	return nil
}

// String formats l for logs, e.g. "1048576B/s burst 4194304B drop".
func (l RateLimit) String() string {
	if !l.Enabled() {
		return "off"
	}
	return fmt.Sprintf("%dB/s burst %dB %s", l.Rate, l.BurstBytes(), l.Policy)
}

// ParseRateLimit returns def with the settings given as text replaced:
// rate as in ParseRate, burst as in ParseSize, policy as in
// ParseRatePolicy. An empty string keeps def's value, except that a new
// rate without a burst gets the default burst (one second of the new
// rate), since a burst chosen for another rate means another duration. A
// value that does not parse keeps def's value too, and is reported in the
// joined error: the caller decides whether a typo is fatal.
func ParseRateLimit(def RateLimit, rate, burst, policy string) (RateLimit, error) {
	l := def
	var errs []error
	if rate != "" {
		if r, err := ParseRate(rate); err != nil {
			errs = append(errs, err)
		} else {
			l.Rate, l.Burst = r, 0
		}
	}
	if burst != "" {
		if b, err := ParseSize(burst); err != nil {
			errs = append(errs, err)
		} else if b == 0 {
			errs = append(errs, fmt.Errorf("burst %q: must be more than 0 bytes: %w", burst, ErrInvalidRate))
		} else {
			l.Burst = b
		}
	}
	if policy != "" {
		if p, err := ParseRatePolicy(policy); err != nil {
			errs = append(errs, err)
		} else {
			l.Policy = p
		}
	}
	return l, errors.Join(errs...)
}

// sizeUnits are the units ParseSize knows, lower case: SI (powers of
// 1000) and IEC (powers of 1024), with or without a trailing "b".
var sizeUnits = map[string]uint64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
}

// maxSize bounds sizes and rates, so arithmetic on them (and their
// conversion to float64 in the bucket) stays exact and far from overflow.
const maxSize = 1 << 50

// ParseSize parses a byte count: a decimal integer followed by an optional
// unit, B, k/KB (1000), Ki/KiB (1024), M/MB, Mi/MiB, G/GB, Gi/GiB, T/TB,
// Ti/TiB, case-insensitive, e.g. "4MiB" or "512k". At most 1 PiB.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes like 4MiB: %w", s, ErrInvalidRate)
	}
	n, err := strconv.ParseUint(t[:i], 10, 64)
	if err != nil || n > maxSize {
		return 0, fmt.Errorf("size %q: too large: %w", s, ErrInvalidRate)
	}
	unit, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit: %w", s, ErrInvalidRate)
	}
	if n > maxSize/unit {
		return 0, fmt.Errorf("size %q: too large: %w", s, ErrInvalidRate)
	}
	return n * unit, nil
}

// ParseRate parses a rate in bytes per second: a size as in ParseSize with
// an optional "/s", e.g. "1MiB/s". "0", "off" and "none" mean no limit (0);
// any other rate must be at least MinRate.
func ParseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	switch t {
	case "off", "none":
		return 0, nil
	}
	n, err := ParseSize(strings.TrimSuffix(t, "/s"))
	if err != nil {
		return 0, fmt.Errorf("rate: %w", err)
	}
	if n != 0 && n < MinRate {
		return 0, fmt.Errorf("rate %q is below the minimum of %d B/s: %w", s, MinRate, ErrInvalidRate)
	}
	return n, nil
}

// RateEvent is a change in a stream's dropping, reported to the
// RateLimiter's observer.
type RateEvent struct {
	// Dropping is true when the stream starts dropping and false when
	// the episode ends (see rateGate).
	Dropping bool
	// DroppedBytes is what the episode dropped (0 when it starts).
	DroppedBytes uint64
	// Duration is how long the episode lasted (0 when it starts).
	Duration time.Duration
}

// clock is the bucket's time source, a seam for tests.
type clock interface {
	now() time.Time
	sleep(d time.Duration)
}

type realClock struct{}

func (realClock) now() time.Time        { return time.Now() }
func (realClock) sleep(d time.Duration) { time.Sleep(d) }

// RateLimiter is one container's log budget, a token bucket in bytes. Set
// it on the container's Log (SetRateLimiter) before its read loops start;
// it is safe for concurrent use by them.
type RateLimiter struct {
	limit   RateLimit
	burst   float64
	rate    float64
	clock   clock
	observe func(Stream, RateEvent) // may be nil

	mu sync.Mutex
	// tokens is the budget left, in bytes, at last. Under the drop policy
	// it goes below zero by up to one chunk per stream: a chunk is logged
	// whole when the budget is positive, and the debt is paid back before
	// the next one.
	tokens float64   // guarded by mu
	last   time.Time // guarded by mu
}

// NewRateLimiter returns a full bucket for l (which must be enabled and
// valid). observe, if not nil, is told when a stream starts and stops
// dropping; it runs on that stream's read loop and must not block.
func NewRateLimiter(l RateLimit, observe func(Stream, RateEvent)) *RateLimiter {
	return newRateLimiter(l, observe, realClock{})
}

func newRateLimiter(l RateLimit, observe func(Stream, RateEvent), c clock) *RateLimiter {
	b := float64(l.BurstBytes())
	return &RateLimiter{
		limit: l, burst: b, rate: float64(l.Rate), clock: c, observe: observe,
		tokens: b, last: c.now(),
	}
}

// Limit returns the limit the bucket enforces.
func (rl *RateLimiter) Limit() RateLimit { return rl.limit }

// refill adds what the time since last earned, up to burst. mu is held.
func (rl *RateLimiter) refill() {
	now := rl.clock.now()
	if d := now.Sub(rl.last); d > 0 {
		rl.tokens = math.Min(rl.burst, rl.tokens+d.Seconds()*rl.rate)
	}
	rl.last = now
}

// admit takes n bytes for a chunk if the budget is positive (drop policy).
func (rl *RateLimiter) admit(n int) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.refill()
	if rl.tokens <= 0 {
		return false
	}
	rl.tokens -= float64(n)
	return true
}

// reserve takes up to limit whole bytes of budget for one read and returns
// how many it took (block policy); refund returns what the read did not
// use. The budget never goes below zero.
func (rl *RateLimiter) reserve(limit int) int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.refill()
	k := int(math.Min(float64(limit), math.Floor(rl.tokens)))
	if k <= 0 {
		return 0
	}
	rl.tokens -= float64(k)
	return k
}

func (rl *RateLimiter) refund(n int) {
	if n <= 0 {
		return
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.tokens = math.Min(rl.burst, rl.tokens+float64(n))
}

// wait sleeps until the budget holds blockMinRead bytes (or the whole
// burst, if smaller) and returns how long it slept (block policy). Each
// sleep is at most blockMinRead / MinRate, plus what the other stream
// took meanwhile.
func (rl *RateLimiter) wait() time.Duration {
	want := math.Min(rl.burst, blockMinRead)
	var slept time.Duration
	for {
		rl.mu.Lock()
		rl.refill()
		short := want - rl.tokens
		rl.mu.Unlock()
		if short <= 0 {
			return slept
		}
		d := time.Duration(math.Ceil(short / rl.rate * float64(time.Second)))
		rl.clock.sleep(d)
		slept += d
	}
}

// SetRateLimiter makes l's read loops take from rl for every chunk they
// hand to l (nil: no limit). Call it before the read loops start.
func (l *Log) SetRateLimiter(rl *RateLimiter) { l.limiter = rl }

// rateGate is one read loop's side of its container's RateLimiter. A nil
// *rateGate (no Log, or no limit) lets everything through.
//
// A drop episode starts with the first chunk dropped and ends with the
// first chunk logged after episodeQuiet without a drop, or with the
// stream: one warning and two observer events per episode, however many
// gaps (each with its marker) it holds.
type rateGate struct {
	rl     *RateLimiter
	s      Stream
	logger *slog.Logger

	gap      uint64 // bytes dropped since the last chunk logged
	midLine  bool   // the last chunk logged did not end with '\n'
	episode  bool   // dropping, see above
	started  time.Time
	lastDrop time.Time
	dropped  uint64 // bytes dropped in this episode
}

// episodeQuiet is how long a stream must go without a drop for its drop
// episode to end.
const episodeQuiet = time.Second

// newRateGate returns the gate of stream s for log's limiter, or nil. Under
// the block policy it caps cr's reads to the budget.
func newRateGate(log *Log, s Stream, logger *slog.Logger, cr *chunkReader) *rateGate {
	if log == nil || log.limiter == nil {
		return nil
	}
	g := &rateGate{rl: log.limiter, s: s, logger: logger}
	if g.rl.limit.Policy == RateBlock {
		cr.quota = g.rl
	} else {
		logger.Debug("log rate limit", "limit", g.rl.limit.String())
	}
	return g
}

// wait waits for the budget before a read (block policy), counting the
// time in st.
func (g *rateGate) wait(st *Stats) {
	if g == nil || g.rl.limit.Policy != RateBlock {
		return
	}
	st.RateLimitWait += g.rl.wait()
}

// pass reports whether chunk p goes to the Log (drop policy). A dropped
// chunk is counted in st. Before the first chunk after a gap it writes the
// gap's marker to log.
func (g *rateGate) pass(log *Log, st *Stats, p []byte) bool {
	if g == nil || g.rl.limit.Policy != RateDrop {
		return true
	}
	if !g.rl.admit(len(p)) {
		g.drop(st, uint64(len(p)))
		return false
	}
	if g.gap > 0 {
		g.mark(log, st)
	}
	if g.episode && g.rl.clock.now().Sub(g.lastDrop) >= episodeQuiet {
		g.endEpisode()
	}
	g.midLine = p[len(p)-1] != '\n'
	return true
}

func (g *rateGate) drop(st *Stats, n uint64) {
	now := g.rl.clock.now()
	st.RateLimitedBytes += n
	g.gap += n
	g.dropped += n
	g.lastDrop = now
	if g.episode {
		return
	}
	g.episode, g.started = true, now
	g.logger.Warn("log rate limit exceeded, dropping output from the log until it slows down",
		"limit", g.rl.limit.String())
	if g.rl.observe != nil {
		g.rl.observe(g.s, RateEvent{Dropping: true})
	}
}

func (g *rateGate) endEpisode() {
	d := g.lastDrop.Sub(g.started)
	g.logger.Info("log rate limit: stopped dropping", "dropped_bytes", g.dropped, "duration", d)
	if g.rl.observe != nil {
		g.rl.observe(g.s, RateEvent{DroppedBytes: g.dropped, Duration: d})
	}
	g.episode, g.dropped = false, 0
}

// mark writes the marker of the current gap: its own record (after a line
// break when the last chunk logged ended mid-line, so it does not join
// that line). Its bytes are the monitor's, not the container's: they are
// neither counted nor taken from the budget. A failed write is not
// reported here: the chunk that follows meets the same failing sink.
func (g *rateGate) mark(log *Log, st *Stats) {
	m := make([]byte, 0, 64)
	if g.midLine {
		m = append(m, '\n')
	}
	m = fmt.Appendf(m, "gomon: %d bytes dropped by the log rate limit\n", g.gap)
	_ = log.WriteChunk(g.s, m)
	st.RateLimitGaps++
	g.gap, g.midLine = 0, false
}

// finish marks a gap left at the end of the stream and ends its episode.
func (g *rateGate) finish(log *Log, st *Stats) {
	if g == nil {
		return
	}
	if g.gap > 0 {
		g.mark(log, st)
	}
	if g.episode {
		g.endEpisode()
	}
}
