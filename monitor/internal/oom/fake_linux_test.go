package oom

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeTree is a fake /proc plus cgroup2 mount in a temporary directory. It
// exercises the v2 code path on hosts whose unified hierarchy has no memory
// controller (hybrid hosts bind memory to v1). Regular files stand in for
// memory.events: inotify reports writes to them like the kernel's counter
// notifications.
type fakeTree struct {
	proc procRoot
	cg   string // the fake cgroup2 mount point
}

const fakePID = 4242

func newFakeTree(t testing.TB, procCgroupLine string) fakeTree {
	t.Helper()
	root := t.TempDir()
	ft := fakeTree{proc: procRoot(filepath.Join(root, "proc")), cg: filepath.Join(root, "cgroup")}
	mustWrite(t, filepath.Join(string(ft.proc), "self", "mountinfo"),
		"41 31 0:38 / "+ft.cg+" rw,relatime - cgroup2 cgroup2 rw\n")
	if procCgroupLine != "" {
		mustWrite(t, filepath.Join(string(ft.proc), strconv.Itoa(fakePID), "cgroup"), procCgroupLine+"\n")
	}
	return ft
}

func mustWrite(t testing.TB, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// events renders memory.events with single-digit counters, so that
// setEvents can rewrite it in place with one same-length write (a
// truncating rewrite would show the watcher an empty file in between).
func events(oom, oomKill int) string {
	return "low 0\nhigh 0\nmax 0\noom " + strconv.Itoa(oom) + "\noom_kill " + strconv.Itoa(oomKill) + "\noom_group_kill 0\n"
}

func setEvents(t *testing.T, name string, oom, oomKill int) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.WriteAt([]byte(events(oom, oomKill)), 0); err != nil {
		t.Fatal(err)
	}
}

// vanish makes name unreadable the way a removed cgroup's files are: the
// watcher holds the descriptor, so deleting would not do; an empty file
// fails the counter read just as ENODEV does.
func vanish(t *testing.T, name string) {
	t.Helper()
	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
}

func TestWatchFakeV2(t *testing.T) {
	const ctr = "/kubepods.slice/pod1.slice/crio-ctr.scope"
	tests := []struct {
		name      string
		procLine  string // "" = process gone
		child     string // initial memory.events of the container cgroup; "" = none
		parent    string // initial memory.events of the pod cgroup; "" = none
		act       func(t *testing.T, w *Watcher, child, parent string)
		want      uint64 // kills
		wantLog   string // a debug line that must have been logged
		noWatcher bool   // nothing to watch: no goroutine, no descriptors
	}{
		{
			name:     "no change",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			want:     0,
		},
		{
			name:     "oom_kill grows and the watcher sees it",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, w *Watcher, child, _ string) {
				setEvents(t, child, 1, 1)
				waitOOMed(t, w)
			},
			want: 1,
		},
		{
			name:     "oom_kill grows and only the final read sees it",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, _ *Watcher, child, _ string) {
				setEvents(t, child, 1, 1)
			},
			want: 1,
		},
		{
			// The goroutine keeps watching after the first kill: the
			// second one is counted live, before Stop, and survives the
			// cgroup's removal.
			name:     "two kills, both seen before the cgroup goes",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, w *Watcher, child, _ string) {
				setEvents(t, child, 1, 1)
				waitOOMed(t, w)
				setEvents(t, child, 2, 2)
				waitKills(t, w, 2)
				vanish(t, child)
			},
			want: 2,
		},
		{
			name:     "kills before Watch are baseline",
			procLine: "0::" + ctr,
			child:    events(3, 3),
			act: func(t *testing.T, _ *Watcher, child, _ string) {
				setEvents(t, child, 4, 3)
			},
			want: 0,
		},
		{
			name:     "oom without a kill here (limit hit, victim elsewhere)",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, _ *Watcher, child, _ string) {
				setEvents(t, child, 1, 0)
			},
			want: 0,
		},
		{
			name:     "kill seen, then cgroup removed before Stop",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, w *Watcher, child, _ string) {
				setEvents(t, child, 1, 1)
				waitOOMed(t, w)
				vanish(t, child)
			},
			want: 1,
		},
		{
			name:     "cgroup removed before the final read, no kill",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			act: func(t *testing.T, _ *Watcher, child, _ string) {
				vanish(t, child)
			},
			want:    0,
			wantLog: "cgroup vanished before the final read",
		},
		{
			// conmon-rs would report an OOM here: child unreadable and the
			// pod cgroup's counter non-zero from an earlier container.
			name:     "regression: past kills in the pod cgroup do not count",
			procLine: "0::" + ctr,
			child:    events(0, 0),
			parent:   events(5, 5),
			act: func(t *testing.T, _ *Watcher, child, parent string) {
				setEvents(t, parent, 6, 6)
				vanish(t, child)
			},
			want: 0,
		},
		{
			name:      "memory controller not enabled (no memory.events)",
			procLine:  "0::" + ctr,
			want:      0,
			wantLog:   "no memory.events",
			noWatcher: true,
		},
		{
			name:      "root cgroup",
			procLine:  "0::/",
			want:      0,
			wantLog:   "root cgroup",
			noWatcher: true,
		},
		{
			name:      "v1 root cgroup",
			procLine:  "4:memory:/\n0::/",
			want:      0,
			wantLog:   "root cgroup",
			noWatcher: true,
		},
		{
			name:      "process already gone",
			want:      0,
			wantLog:   "process already gone",
			noWatcher: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := newFakeTree(t, tt.procLine)
			child := filepath.Join(ft.cg, ctr, "memory.events")
			parent := filepath.Join(ft.cg, filepath.Dir(ctr), "memory.events")
			if tt.child != "" {
				mustWrite(t, child, tt.child)
			}
			if tt.parent != "" {
				mustWrite(t, parent, tt.parent)
			}
			fds := countFDs(t)
			logger, logs := newTestLogger()

			w, err := watch(ft.proc, fakePID, logger)
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			if tt.noWatcher && (w.notify != nil || w.counter != nil) {
				t.Error("watcher holds descriptors though there is nothing to watch")
			}
			if tt.act != nil {
				tt.act(t, w, child, parent)
			}
			if got := stopAndCheck(t, w); got != tt.want {
				t.Errorf("Stop = %d kills, want %d; log:\n%s", got, tt.want, logs)
			}
			if tt.wantLog != "" && !logs.contains(tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs)
			}
			if after := countFDs(t); after != fds {
				t.Errorf("open descriptors: %d before Watch, %d after Stop", fds, after)
			}
		})
	}
}

func TestWatchFakeErrors(t *testing.T) {
	tests := []struct {
		name     string
		procLine string
		noMount  bool
		wantErr  error
	}{
		{name: "cgroup outside our namespace", procLine: "0::/../../other", wantErr: errOutsideMount},
		{name: "no cgroup2 mount", procLine: "0::/a", noMount: true, wantErr: errNoMount},
		{name: "no memory hierarchy at all", procLine: "1:cpu:/a", wantErr: errNoMemoryCgroup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := newFakeTree(t, tt.procLine)
			if tt.noMount {
				mustWrite(t, filepath.Join(string(ft.proc), "self", "mountinfo"), "")
			}
			w, err := watch(ft.proc, fakePID, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if w != nil {
				t.Error("got a Watcher with an error")
			}
			// The monitor may call Stop on what Watch returned regardless.
			if w.Stop(context.Background()) != 0 {
				t.Error("nil Watcher reported an OOM")
			}
			if _, ok := w.Count(); ok {
				t.Error("nil Watcher has a count")
			}
			if w.OOMed() != nil {
				t.Error("nil Watcher has a non-nil OOMed channel")
			}
		})
	}
}

func TestStopContext(t *testing.T) {
	ft := newFakeTree(t, "0::/ctr")
	child := filepath.Join(ft.cg, "ctr", "memory.events")
	mustWrite(t, child, events(0, 0))
	w, err := watch(ft.proc, fakePID, nil)
	if err != nil {
		t.Fatal(err)
	}
	setEvents(t, child, 1, 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w.Stop(ctx) != 1 {
		t.Error("Stop with a done context lost the OOM")
	}
	// A later Stop waits for the goroutine and keeps the verdict.
	if stopAndCheck(t, w) != 1 {
		t.Error("second Stop lost the OOM")
	}
}

func TestStopConcurrent(t *testing.T) {
	ft := newFakeTree(t, "0::/ctr")
	child := filepath.Join(ft.cg, "ctr", "memory.events")
	mustWrite(t, child, events(0, 0))
	w, err := watch(ft.proc, fakePID, nil)
	if err != nil {
		t.Fatal(err)
	}
	setEvents(t, child, 1, 1)

	var wg sync.WaitGroup
	results := make([]uint64, 8)
	for i := range results {
		wg.Go(func() { results[i] = w.Stop(context.Background()) })
	}
	wg.Wait()
	for i, got := range results {
		if got != 1 {
			t.Errorf("Stop #%d = %d kills, want 1", i, got)
		}
	}
}

// TestCount: an exec session reads the count before and after its process
// ran; it is the counter's growth since Watch, read now, and unknown once
// the watch stopped.
func TestCount(t *testing.T) {
	ft := newFakeTree(t, "0::/ctr")
	child := filepath.Join(ft.cg, "ctr", "memory.events")
	mustWrite(t, child, events(2, 2))
	w, err := watch(ft.proc, fakePID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := w.Count(); !ok || n != 0 {
		t.Fatalf("Count at start = %d, %v; want 0, true", n, ok)
	}
	setEvents(t, child, 3, 3)
	if n, ok := w.Count(); !ok || n != 1 {
		t.Fatalf("Count after a kill = %d, %v; want 1, true", n, ok)
	}
	if got := stopAndCheck(t, w); got != 1 {
		t.Fatalf("Stop = %d, want 1", got)
	}
	if n, ok := w.Count(); ok {
		t.Fatalf("Count after Stop = %d, true; want unknown", n)
	}
}

// BenchmarkResolve measures what Watch reads from /proc for a container
// before arming the watch.
func BenchmarkResolve(b *testing.B) {
	ft := newFakeTree(b, strings.TrimSuffix(busyProcCgroup, "\n"))
	mustWrite(b, filepath.Join(string(ft.proc), "self", "mountinfo"), busyMountinfo(false))
	b.ReportAllocs()
	for b.Loop() {
		cg, err := readProcCgroup(ft.proc, fakePID)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := resolveDir(ft.proc, cg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCount measures what an exec session adds: one read of the
// container's counter before its process starts and one after.
func BenchmarkCount(b *testing.B) {
	ft := newFakeTree(b, "0::/ctr")
	mustWrite(b, filepath.Join(ft.cg, "ctr", "memory.events"), events(0, 0))
	w, err := watch(ft.proc, fakePID, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := w.Count(); !ok {
			b.Fatal("no count")
		}
	}
}
