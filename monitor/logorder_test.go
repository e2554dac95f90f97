package monitor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// pairsScript writes "out N" to stdout and then "err N" to stderr, one
// write(2) each (busybox sh's echo is a builtin), for N = 1..pairs.
const pairsScript = `i=1; while [ $i -le 200 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done`

const pairs = 200

// logOrder reads a CRI log and returns its records' contents in file order
// and whether each record's timestamp was not older than the one before.
func logOrder(t *testing.T, path string) (lines []string, monotonic bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	monotonic = true
	var last time.Time
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) != 4 {
			t.Fatalf("bad record %q", sc.Text())
		}
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatal(err)
		}
		if ts.Before(last) {
			monotonic = false
		}
		last = ts
		if f[2] != "F" {
			t.Fatalf("record is not a full line: %q", sc.Text())
		}
		lines = append(lines, f[3])
	}
	return lines, monotonic
}

// inversions counts the pairs whose "err N" record comes before "out N",
// and checks that every line is there once.
func inversions(t *testing.T, lines []string) int {
	t.Helper()
	pos := make(map[string]int, len(lines))
	for i, l := range lines {
		if _, dup := pos[l]; dup {
			t.Fatalf("line %q twice", l)
		}
		pos[l] = i
	}
	if len(pos) != 2*pairs {
		t.Fatalf("%d lines, want %d", len(pos), 2*pairs)
	}
	n := 0
	for i := 1; i <= pairs; i++ {
		o, ok1 := pos[fmt.Sprintf("out %d", i)]
		e, ok2 := pos[fmt.Sprintf("err %d", i)]
		if !ok1 || !ok2 {
			t.Fatalf("pair %d missing", i)
		}
		if e < o {
			n++
		}
	}
	return n
}

// TestLogOrderStdoutStderr: a container alternating stdout and stderr
// writes gets its lines in the CRI log in the order it wrote them, with
// timestamps that never go back, alone and with nine more such
// containers running at the same time in the same monitor.
func TestLogOrderStdoutStderr(t *testing.T) {
	m := newTestMonitor(t)
	for _, n := range []int{1, 10} {
		t.Run(fmt.Sprintf("containers=%d", n), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			logs := make([]string, n)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				p := newPaths(t)
				logs[i] = p.log
				id := fmt.Sprintf("order-%d-%d", n, i)
				req := p.request(id, monitortest.Bundle(t, "sh", "-c", pairsScript))
				if _, err := m.CreateContainer(ctx, req); err != nil {
					t.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := m.Start(ctx, id); err != nil {
						errs <- err
						return
					}
					if st, err := m.Wait(ctx, id); err != nil || st.Code != 0 {
						errs <- fmt.Errorf("wait %s: %+v %w", id, st, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i, path := range logs {
				lines, mono := logOrder(t, path)
				if inv := inversions(t, lines); inv != 0 {
					t.Errorf("container %d: %d of %d pairs inverted", i, inv, pairs)
				}
				if !mono {
					t.Errorf("container %d: a record's timestamp is older than the one before", i)
				}
			}
		})
	}
}
