package ioloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the bucket's clock in tests: time moves only when the test
// (or a sleep) moves it.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{t: testTime} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept += d
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestRateLimiterAdmit(t *testing.T) {
	clk := newFakeClock()
	rl := newRateLimiter(RateLimit{Rate: 1024, Burst: 1000}, nil, clk)
	steps := []struct {
		advance time.Duration
		n       int
		want    bool
	}{
		{0, 600, true},                       // 1000 -> 400
		{0, 600, true},                       // positive budget: the whole chunk, 400 -> -200
		{0, 1, false},                        // in debt
		{time.Second * 200 / 1024, 1, false}, // -200 + 200 = 0: still nothing
		{time.Millisecond, 100, true},        // ~1 byte of budget: the chunk goes
		{time.Hour, 1, true},                 // refilled to the burst, not beyond
		{0, 999, true},                       // 999 -> 0
		{0, 1, false},
	}
	for i, s := range steps {
		clk.advance(s.advance)
		if got := rl.admit(s.n); got != s.want {
			t.Fatalf("step %d: admit(%d) = %v, want %v (tokens %v)", i, s.n, got, s.want, rl.tokens)
		}
	}
}

func TestRateLimiterReserve(t *testing.T) {
	clk := newFakeClock()
	rl := newRateLimiter(RateLimit{Rate: 2048, Burst: 10000, Policy: RateBlock}, nil, clk)
	if k := rl.reserve(readBufSize); k != 10000 {
		t.Fatalf("reserve from a full bucket = %d, want the burst", k)
	}
	rl.refund(3000) // the read brought 7000
	if k := rl.reserve(1000); k != 1000 {
		t.Fatalf("reserve(1000) = %d", k)
	}
	if k := rl.reserve(readBufSize); k != 2000 {
		t.Fatalf("reserve = %d, want the 2000 left", k)
	}
	if k := rl.reserve(readBufSize); k != 0 {
		t.Fatalf("reserve from an empty bucket = %d", k)
	}
	// wait sleeps until blockMinRead bytes are back: 4096 / 2048 s.
	if d := rl.wait(); d != 2*time.Second || clk.slept != 2*time.Second {
		t.Fatalf("wait slept %v (clock %v), want 2s", d, clk.slept)
	}
	if k := rl.reserve(readBufSize); k != blockMinRead {
		t.Fatalf("reserve after wait = %d, want %d", k, blockMinRead)
	}
	if d := rl.wait(); d != 2*time.Second {
		t.Fatalf("second wait slept %v", d)
	}
	// A burst below blockMinRead is waited for whole.
	small := newRateLimiter(RateLimit{Rate: 1024, Burst: 512, Policy: RateBlock}, nil, newFakeClock())
	small.reserve(512)
	if d := small.wait(); d != 500*time.Millisecond {
		t.Fatalf("wait with a 512 B burst slept %v, want 500ms", d)
	}
	// The budget never goes negative, nor above the burst.
	rl.refund(1 << 30)
	if rl.tokens != rl.burst {
		t.Fatalf("tokens after a huge refund = %v, want the burst", rl.tokens)
	}
}

// clockedReader returns its chunks one per Read, moving the clock by step
// before each (by slowStep from chunk slowFrom on): a container writing at
// len(chunk)/step bytes per second.
type clockedReader struct {
	chunks   [][]byte
	clk      *fakeClock
	step     time.Duration
	slowFrom int
	slowStep time.Duration
	i        int
}

func (r *clockedReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	if r.i >= r.slowFrom {
		r.step = r.slowStep
	}
	r.i++
	r.clk.advance(r.step)
	n := copy(p, r.chunks[0])
	if n < len(r.chunks[0]) {
		r.chunks[0] = r.chunks[0][n:]
	} else {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

var markerRE = regexp.MustCompile(`(?m)^gomon: (\d+) bytes dropped by the log rate limit\n`)

// splitMarkers returns b without its marker records and the bytes they
// report.
func splitMarkers(t *testing.T, b []byte) (rest []byte, reported uint64, markers int) {
	t.Helper()
	for _, m := range markerRE.FindAllSubmatch(b, -1) {
		n, err := strconv.ParseUint(string(m[1]), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		reported += n
		markers++
	}
	return markerRE.ReplaceAll(b, nil), reported, markers
}

func TestReadLoopRateLimitDrop(t *testing.T) {
	// 4 s of a container writing 1000-byte lines at 100 KiB/s, limited to
	// 10 KiB/s with a 20 KiB burst, then 3 s at 1 KiB/s.
	clk := newFakeClock()
	var chunks [][]byte
	var all []byte
	for i := range 400 {
		c := []byte(fmt.Sprintf("%04d %s\n", i, strings.Repeat("x", 994)))
		chunks = append(chunks, c)
		all = append(all, c...)
	}
	var events []RateEvent
	rl := newRateLimiter(RateLimit{Rate: 10 << 10, Burst: 20 << 10}, func(s Stream, ev RateEvent) {
		if s != Stderr {
			t.Errorf("event for %s", s)
		}
		events = append(events, ev)
	}, clk)
	sink := &recordingSink{}
	log := NewLog(sink)
	log.SetRateLimiter(rl)
	// The slow tail is logged whole, and its second chunk (2 s after the
	// last drop) ends the episode.
	var tail []byte
	for i := range 3 {
		c := []byte(fmt.Sprintf("tail %d\n", i))
		tail = append(tail, c...)
		chunks = append(chunks, c)
	}
	all = append(all, tail...)
	var tee bytes.Buffer
	r := &clockedReader{chunks: chunks, clk: clk, step: time.Second / 100, slowFrom: 400, slowStep: time.Second}
	st, err := ReadLoop(r, Stderr, log, nil, &tee)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tee.Bytes(), all) {
		t.Fatal("the tee writer did not get everything")
	}
	logged, reported, markers := splitMarkers(t, sink.got)
	total, dropped := st.Bytes, st.RateLimitedBytes
	if total != uint64(len(all)) || uint64(len(logged))+dropped != total {
		t.Fatalf("read %d, logged %d + dropped %d, want %d", total, len(logged), dropped, len(all))
	}
	if reported != dropped || uint64(markers) != st.RateLimitGaps || markers < 2 {
		t.Fatalf("markers report %d bytes in %d gaps, stats %d bytes in %d", reported, markers,
			dropped, st.RateLimitGaps)
	}
	// Whole lines only, in order, each once: chunks are dropped whole.
	if !bytes.HasSuffix(logged, tail) {
		t.Fatalf("log does not end with the tail: %q", logged[max(0, len(logged)-200):])
	}
	// burst + rate x 4 s, give or take a chunk.
	want := 20<<10 + 4*10<<10
	if d := len(logged) - len(tail) - want; d < -1000 || d > 1000 {
		t.Fatalf("logged %d bytes of the flood, want %d ± 1000", len(logged)-len(tail), want)
	}
	if len(events) != 2 || !events[0].Dropping || events[1].Dropping || events[1].DroppedBytes != dropped {
		t.Fatalf("events = %+v, want start, then stop with %d bytes", events, dropped)
	}
}

func TestReadLoopRateLimitTrailingGap(t *testing.T) {
	// A stream that ends while dropping gets its marker at the end; a
	// chunk cut mid-line gets a line break before the marker.
	clk := newFakeClock()
	rl := newRateLimiter(RateLimit{Rate: 1024, Burst: 10}, nil, clk)
	sink := &recordingSink{}
	log := NewLog(sink)
	log.SetRateLimiter(rl)
	r := &scriptedReader{chunks: [][]byte{[]byte("no newline"), []byte("dropped\n"), []byte("too\n")}}
	st, err := ReadLoop(r, Stdout, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "no newline\ngomon: 12 bytes dropped by the log rate limit\n"
	if string(sink.got) != want || st.RateLimitedBytes != 12 || st.RateLimitGaps != 1 {
		t.Fatalf("log %q, stats %+v; want %q", sink.got, st, want)
	}
}

func TestReadLoopRateLimitBlock(t *testing.T) {
	// Under the block policy nothing is dropped, reads never exceed the
	// budget and the loop waits (1 MiB at 64 KiB/s with a 64 KiB burst:
	// 15 s of waiting on the fake clock).
	clk := newFakeClock()
	rl := newRateLimiter(RateLimit{Rate: 64 << 10, Burst: 64 << 10, Policy: RateBlock}, nil, clk)
	sink := &recordingSink{}
	log := NewLog(sink)
	log.SetRateLimiter(rl)
	data := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
	sizes := &sizeReader{r: bytes.NewReader(data)}
	st, err := ReadLoop(sizes, Stdout, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.got, data) || st.RateLimitedBytes != 0 || st.RateLimitGaps != 0 {
		t.Fatalf("log has %d of %d bytes, stats %+v", len(sink.got), len(data), st)
	}
	if sizes.max > 64<<10 {
		t.Fatalf("a read asked for %d bytes, more than the burst", sizes.max)
	}
	if want := 15 * time.Second; st.RateLimitWait < want-time.Second || st.RateLimitWait > want+time.Second {
		t.Fatalf("waited %v, want about %v", st.RateLimitWait, want)
	}
}

// sizeReader records the largest buffer it was asked to fill.
type sizeReader struct {
	r   io.Reader
	max int
}

func (s *sizeReader) Read(p []byte) (int, error) {
	s.max = max(s.max, len(p))
	return s.r.Read(p)
}

func TestReadLoopRateLimitNotForTeeOnly(t *testing.T) {
	// Without a Log (exec sessions) there is nothing to limit.
	r := &scriptedReader{chunks: [][]byte{bytes.Repeat([]byte("x"), 1<<20)}}
	var tee bytes.Buffer
	st, err := ReadLoop(r, Stdout, nil, nil, &tee)
	if err != nil || tee.Len() != 1<<20 || st.RateLimitedBytes != 0 {
		t.Fatalf("tee got %d, stats %+v, err %v", tee.Len(), st, err)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{
		"0": 0, "17": 17, "17B": 17, "4MiB": 4 << 20, "4mib": 4 << 20, "4 Mi": 4 << 20,
		"512k": 512000, "512KB": 512000, "512KiB": 512 << 10, "1G": 1e9, "1GiB": 1 << 30,
		" 2TiB ": 2 << 40, "1024TiB": 1 << 50,
	}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "4 MiBs", "1025TiB", "99999999999999999999", "0x10"} {
		if got, err := ParseSize(in); !errors.Is(err, ErrInvalidRate) {
			t.Errorf("ParseSize(%q) = %d, %v; want ErrInvalidRate", in, got, err)
		}
	}
}

func TestParseRate(t *testing.T) {
	good := map[string]uint64{"1MiB/s": 1 << 20, "1MiB": 1 << 20, "0": 0, "off": 0, "none": 0, "1KiB/s": 1024}
	for in, want := range good {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"1000/s", "1MiB/m", "fast", "1/s"} {
		if got, err := ParseRate(in); !errors.Is(err, ErrInvalidRate) {
			t.Errorf("ParseRate(%q) = %d, %v; want ErrInvalidRate", in, got, err)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	node := RateLimit{Rate: 1 << 20, Burst: 4 << 20}
	tests := []struct {
		name                string
		rate, burst, policy string
		want                RateLimit
		bad                 bool
	}{
		{name: "nothing set", want: node},
		{name: "policy only", policy: "block", want: RateLimit{Rate: 1 << 20, Burst: 4 << 20, Policy: RateBlock}},
		{name: "new rate gets its own burst", rate: "64KiB/s", want: RateLimit{Rate: 64 << 10}},
		{name: "rate and burst", rate: "64KiB/s", burst: "1MiB", want: RateLimit{Rate: 64 << 10, Burst: 1 << 20}},
		{name: "off", rate: "0", want: RateLimit{}},
		{name: "bad rate keeps the node's", rate: "lots", want: node, bad: true},
		{name: "bad burst", burst: "0", want: node, bad: true},
		{name: "bad policy, good rate", rate: "2MiB/s", policy: "slow", want: RateLimit{Rate: 2 << 20}, bad: true},
	}
	for _, tt := range tests {
		got, err := ParseRateLimit(node, tt.rate, tt.burst, tt.policy)
		if got != tt.want || (err != nil) != tt.bad || tt.bad && !errors.Is(err, ErrInvalidRate) {
			t.Errorf("%s: got %+v, %v; want %+v (error %v)", tt.name, got, err, tt.want, tt.bad)
		}
	}
	if err := (RateLimit{Rate: 10}).Validate(); !errors.Is(err, ErrInvalidRate) {
		t.Errorf("Validate of a tiny rate = %v", err)
	}
	if got := (RateLimit{Rate: 100 << 10}).BurstBytes(); got != 100<<10 {
		t.Errorf("default burst = %d, want one second of the rate", got)
	}
}

// FuzzParseSize checks the size parser never panics, stays within maxSize
// and reads back what a number and a unit spell.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4MiB", "1MiB/s", "0", "512k", "18446744073709551615", "1 tib", "off"} {
		f.Add(s, uint64(1), "KiB")
	}
	f.Fuzz(func(t *testing.T, s string, n uint64, unit string) {
		if v, err := ParseSize(s); err == nil && v > maxSize {
			t.Fatalf("ParseSize(%q) = %d > maxSize", s, v)
		}
		if v, err := ParseRate(s); err == nil && (v > maxSize || v != 0 && v < MinRate) {
			t.Fatalf("ParseRate(%q) = %d out of bounds", s, v)
		}
		mul, ok := sizeUnits[strings.ToLower(unit)]
		if !ok || n > maxSize/mul {
			return
		}
		if v, err := ParseSize(strconv.FormatUint(n, 10) + unit); err != nil || v != n*mul {
			t.Fatalf("ParseSize(%d%s) = %d, %v; want %d", n, unit, v, err, n*mul)
		}
	})
}
