package reliability

// The soak's fault injectors and the fakes they toggle: a journald that
// stalls, an OTLP/HTTP collector that goes down (or turns hostile), a
// filesystem that fills up, a runtime that fails, clients that die and
// floods of connections. None of these helpers may call t.Fatal: they run
// on goroutines of their own and return errors instead.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fakeJournal is a journald native-protocol socket whose reader the soak
// pauses and resumes. Its receive buffer is as small as the kernel allows,
// so a pause is felt by the daemon at once.
type fakeJournal struct {
	path string
	conn *net.UnixConn

	stalled atomic.Bool
	done    chan struct{}
	stop    chan struct{}

	mu      sync.Mutex
	msgs    []string // MESSAGE fields, in arrival order
	times   []time.Time
	dropped int      // sum of GOMON_DROPPED_RECORDS
	reports int      // records carrying GOMON_DROPPED_RECORDS
	bad     []string // datagrams that did not parse
}

func startFakeJournal(dir string) (*fakeJournal, error) {
	j := &fakeJournal{path: filepath.Join(dir, "journal.sock"), done: make(chan struct{}), stop: make(chan struct{})}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: j.path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listen journal socket: %w", err)
	}
	if err := conn.SetReadBuffer(1); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("shrink journal socket buffer: %w", err)
	}
	j.conn = conn
	go j.run()
	return j, nil
}

func (j *fakeJournal) run() {
	defer close(j.done)
	buf := make([]byte, 4<<20)
	for {
		select {
		case <-j.stop:
			return
		default:
		}
		if j.stalled.Load() {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		_ = j.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := j.conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return
		}
		j.add(buf[:n])
	}
}

// add parses one datagram of the native protocol: KEY=value lines, or
// KEY\n<64-bit little-endian length><value>\n for values with newlines.
func (j *fakeJournal) add(d []byte) {
	fields := map[string]string{}
	for len(d) > 0 {
		nl := strings.IndexByte(string(d), '\n')
		if nl < 0 {
			j.mu.Lock()
			j.bad = append(j.bad, string(d))
			j.mu.Unlock()
			return
		}
		line := string(d[:nl])
		if k, v, ok := strings.Cut(line, "="); ok {
			fields[k] = v
			d = d[nl+1:]
			continue
		}
		rest := d[nl+1:]
		if len(rest) < 8 {
			return
		}
		size := binary.LittleEndian.Uint64(rest[:8])
		if uint64(len(rest)-8) < size+1 {
			return
		}
		fields[line] = string(rest[8 : 8+size])
		d = rest[8+size+1:]
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if m, ok := fields["MESSAGE"]; ok {
		j.msgs = append(j.msgs, m)
		j.times = append(j.times, time.Now())
	}
	if v, ok := fields["GOMON_DROPPED_RECORDS"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			j.bad = append(j.bad, "GOMON_DROPPED_RECORDS="+v)
			return
		}
		j.dropped += n
		j.reports++
	}
}

// snapshot returns the messages so far and the dropped-record count.
func (j *fakeJournal) snapshot() (msgs []string, dropped, reports int, bad []string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.msgs...), j.dropped, j.reports, append([]string(nil), j.bad...)
}

// timed returns the messages prefixed with their arrival time.
func (j *fakeJournal) timed() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]string, len(j.msgs))
	for i, m := range j.msgs {
		out[i] = j.times[i].UTC().Format("15:04:05.000") + " " + m
	}
	return out
}

func (j *fakeJournal) close() {
	close(j.stop)
	<-j.done
	_ = j.conn.Close()
}

// collector modes.
const (
	collectorUp = iota
	collectorDown
	collectorSlow        // hostile: answers after the exporter's 5 s timeout
	collectorGarbage     // hostile: answers with bytes that are not HTTP
	collectorHugeChunk   // hostile: a chunk size near MaxInt64 after a small chunk
	collectorEndlessHead // hostile: a header line that never ends (cut at 64 MiB)
)

var collectorModeNames = []string{"up", "down", "slow", "garbage", "huge chunk", "endless header"}

// fakeCollector is an OTLP/HTTP endpoint on a fixed loopback port that
// answers 200 to POST /v1/traces, closes its port, or answers badly.
type fakeCollector struct {
	addr string

	mu    sync.Mutex
	ln    net.Listener // nil while down
	mode  int
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup

	posts atomic.Int64 // requests answered 200
	bytes atomic.Int64 // their body bytes
}

func startFakeCollector() (*fakeCollector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen collector: %w", err)
	}
	c := &fakeCollector{addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	c.serve(ln)
	return c, nil
}

// serve runs an accept loop over ln; the caller holds no lock.
func (c *fakeCollector) serve(ln net.Listener) {
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	c.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			mode := c.mode
			c.conns[conn] = struct{}{}
			c.mu.Unlock()
			c.wg.Go(func() {
				defer func() {
					c.mu.Lock()
					delete(c.conns, conn)
					c.mu.Unlock()
					_ = conn.Close()
				}()
				c.handle(conn, mode)
			})
		}
	})
}

func (c *fakeCollector) handle(conn net.Conn, mode int) {
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		n, err := io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
		if err != nil {
			return
		}
		switch mode {
		case collectorUp:
			if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
				_, _ = io.WriteString(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
				continue
			}
			c.posts.Add(1)
			c.bytes.Add(n)
			if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		case collectorSlow:
			time.Sleep(8 * time.Second)
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			return
		case collectorGarbage:
			junk := make([]byte, 4096)
			for i := range junk {
				junk[i] = byte(rand.IntN(256))
			}
			_, _ = conn.Write(junk)
			return
		case collectorHugeChunk:
			// A small chunk first, so that the size read so far plus the
			// next one overflows an int.
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n7ffffffffffffffc\r\n")
			_, _ = conn.Write(make([]byte, 64<<10))
			return
		case collectorEndlessHead:
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Endless: ")
			line := []byte(strings.Repeat("a", 64<<10))
			for range 1024 { // 64 MiB at most
				if _, err := conn.Write(line); err != nil {
					return
				}
			}
			return
		}
	}
}

// setMode switches the collector; down closes the port and every
// connection, anything else (re)opens the same port.
func (c *fakeCollector) setMode(mode int) error {
	c.mu.Lock()
	ln := c.ln
	c.mode = mode
	if mode == collectorDown {
		c.ln = nil
		for conn := range c.conns {
			_ = conn.Close()
		}
	}
	c.mu.Unlock()
	if mode == collectorDown {
		if ln != nil {
			_ = ln.Close()
		}
		return nil
	}
	if ln != nil {
		return nil
	}
	nl, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("reopen collector port %s: %w", c.addr, err)
	}
	c.serve(nl)
	return nil
}

func (c *fakeCollector) close() {
	_ = c.setMode(collectorDown)
	c.wg.Wait()
}

// fillFS writes path until its filesystem refuses (ENOSPC).
func fillFS(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create filler: %w", err)
	}
	defer func() { _ = f.Close() }() // the filler is removed later
	for _, size := range []int{1 << 20, 64 << 10, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return fmt.Errorf("fill: %w", err)
				}
				break
			}
		}
	}
	return nil
}

// setRuntimeFaults replaces the fault wrapper's control file (verb mode
// lines; "" = pass-through) atomically.
func setRuntimeFaults(fr *faultRuntime, content string) error {
	p := filepath.Join(fr.dir, "control")
	if err := os.WriteFile(p+".tmp", []byte(content), 0o644); err != nil {
		return fmt.Errorf("write runtime control: %w", err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("install runtime control: %w", err)
	}
	return nil
}

// spawnHelper starts the helper client (helper_test.go) without a
// *testing.T; the caller kills or waits for it.
func spawnHelper(cfg helperCfg) (*exec.Cmd, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode helper config: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find test binary: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"="+roleHelper, helperEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start helper: %w", err)
	}
	return cmd, nil
}

// nsProcs lists the processes in the PID namespace of pid whose argv is
// exactly argv.
func nsProcs(pid uint32, argv ...string) ([]int, error) {
	ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(int(pid)), "ns", "pid"))
	if err != nil {
		return nil, fmt.Errorf("pid namespace of %d: %w", pid, err)
	}
	want := strings.Join(argv, "\x00") + "\x00"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || got != ns {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && string(cmd) == want {
			out = append(out, p)
		}
	}
	return out, nil
}

// soakFlood dials n connections to sock at once, writes a few bytes of junk
// on every other one, holds them for hold and closes them. It returns how
// many dials succeeded.
func soakFlood(sock string, n int, hold time.Duration) (int, error) {
	var mu sync.Mutex
	var conns []net.Conn
	var firstErr error
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("unix", sock, 5*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			if i%2 == 1 {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte("\x00\x00\x00\x00\xff\xff\xff\x7fjunk"))
			}
			conns = append(conns, c)
		})
	}
	wg.Wait()
	time.Sleep(hold)
	for _, c := range conns {
		_ = c.Close()
	}
	if len(conns) == 0 && firstErr != nil {
		return 0, fmt.Errorf("flood: %w", firstErr)
	}
	return len(conns), nil
}

// sleepCtx sleeps d or until ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// randDur is a uniformly random duration in [lo, hi).
func randDur(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)))
}
