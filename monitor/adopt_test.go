package monitor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/internal/handoff"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// TestTraceParentRoundTrip: the create's span context survives the
// record, so an adopted container's spans join its trace; a missing or
// malformed one gives no parent.
func TestTraceParentRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	tp := traceParent(trace.ContextWithSpanContext(context.Background(), sc))
	if tp != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Fatalf("traceparent %q", tp)
	}
	got := trace.SpanContextFromContext(fromTraceParent(tp))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("span context %+v, want %+v (remote)", got, sc)
	}
	for _, bad := range []string{"", "00-xyz-0102030405060708-01", "01-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"} {
		if trace.SpanContextFromContext(fromTraceParent(bad)).IsValid() {
			t.Errorf("traceparent %q gave a parent", bad)
		}
	}
	if traceParent(context.Background()) != "" {
		t.Error("no span: traceparent not empty")
	}
}

// fileSource is an FDSource that hands out one file per slot.
type fileSource map[uint64]*os.File

func (s fileSource) Take(slot uint64) (*os.File, error) {
	f := s[slot]
	delete(s, slot)
	return f, nil
}

// cloexec reports whether fd is close-on-exec.
func cloexec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

// TestHandoffCarriesTerminalLeaksTombstones: a handoff's record names a
// terminal container's pty master and its leaked fds (with their files'
// identity), and the tombstone of an exited container; Keep clears
// close-on-exec on exactly those, Abort sets it again and the terminal's
// read loop goes on on the same master.
func TestHandoffCarriesTerminalLeaksTombstones(t *testing.T) {
	leaked, err := os.CreateTemp(t.TempDir(), "leaked")
	if err != nil {
		t.Fatal(err)
	}
	m := newTestMonitorWith(t, Config{FDs: fileSource{7: leaked}})
	ctx := context.Background()
	p := newPaths(t)

	gone := p.request("gone", monitortest.Bundle(t, "sh", "-c", "exit 3"))
	gone.ExitPaths, gone.OOMExitPaths = []string{filepath.Join(p.dir, "gone-exit")}, nil
	gone.LogDrivers = []LogDriver{{Type: LogCRI, Path: filepath.Join(p.dir, "gone.log")}}
	gone.GlobalArgs = []string{"--debug"}
	if _, err := m.CreateContainer(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	retired(t, m, "gone")

	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"}, Terminal: true})
	req := p.request("tty", bundle)
	req.Terminal, req.Stdin, req.LeakFDs = true, true, []uint64{7}
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "tty"); err != nil {
		t.Fatal(err)
	}

	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h, err := m.PrepareHandoff(hctx)
	if err != nil {
		t.Fatalf("PrepareHandoff: %v", err)
	}
	recs := h.Containers()
	if len(recs) != 1 {
		t.Fatalf("records %+v, want the terminal's", recs)
	}
	r := recs[0]
	if !r.Terminal || !r.Stdin || r.StdoutFD != -1 || r.StderrFD != -1 || r.StdinFD != -1 || r.ConsoleFD < 3 {
		t.Fatalf("terminal record %+v", r)
	}
	if _, err := unix.IoctlGetInt(r.ConsoleFD, unix.TIOCGPTN); err != nil {
		t.Fatalf("console fd %d is not a pty master: %v", r.ConsoleFD, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(leaked.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if len(r.LeakFDs) != 1 || r.LeakFDs[0].Dev != uint64(st.Dev) || r.LeakFDs[0].Ino != st.Ino {
		t.Fatalf("leaked fds %+v, want the file of dev %d ino %d", r.LeakFDs, st.Dev, st.Ino)
	}
	ex := h.Exited()
	if len(ex) != 1 || ex[0].ID != "gone" || ex[0].ExitCode != 3 || len(ex[0].GlobalArgs) != 1 || ex[0].GlobalArgs[0] != "--debug" {
		t.Fatalf("exited %+v, want gone's tombstone (exit 3, --debug)", ex)
	}
	fds := []int{r.ConsoleFD, r.LeakFDs[0].FD}
	if err := h.Keep(); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if cloexec(t, fd) {
			t.Errorf("fd %d still close-on-exec after Keep", fd)
		}
	}
	logged, _ := os.ReadFile(p.log)
	h.Abort()
	for _, fd := range fds {
		if !cloexec(t, fd) {
			t.Errorf("fd %d not close-on-exec after Abort", fd)
		}
	}
	// The loop goes on on the same master: more ticks come.
	if !waitFor(10*time.Second, func() bool {
		now, _ := os.ReadFile(p.log)
		return len(now) > len(logged)+20
	}) {
		t.Fatal("no terminal output after Abort")
	}
	if err := m.SetWindowSize(ctx, "tty", 100, 30); err != nil {
		t.Fatalf("SetWindowSize after Abort: %v", err)
	}
}

// TestRestoreTombstones: the exited containers of a record answer late
// calls in the new process as in the old one, and a create of the same ID
// replaces one.
func TestRestoreTombstones(t *testing.T) {
	m := &Monitor{containers: map[string]*container{}, tombs: map[string]*tombstone{}}
	m.restoreTombstones([]handoff.Tombstone{
		{ID: "a", ExitCode: 137, Signal: 9, OOMKilled: true, OOMInit: 1, Cgroup: 1, GlobalArgs: []string{"--x"}},
		{ID: "b", ExitCode: 0},
	})
	st, err := m.Wait(context.Background(), "a")
	if err != nil || st.Code != 137 || st.Signal != 9 || !st.OOMKilled || st.OOMKills.Init != 1 {
		t.Fatalf("Wait(a) = %+v, %v", st, err)
	}
	if err := m.Kill(context.Background(), "b", unix.SIGTERM); err != nil {
		t.Fatalf("Kill of an exited container: %v", err)
	}
	_, tomb, _ := m.lookup("a")
	if tomb == nil || tomb.cgroup != Cgroupfs || len(tomb.globalArgs) != 1 {
		t.Fatalf("tombstone %+v", tomb)
	}
	if err := m.reserve(&container{id: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, tomb, _ := m.lookup("a"); tomb != nil || len(m.exited) != 1 {
		t.Fatalf("create over a restored tombstone left it (%d exited)", len(m.exited))
	}
}

// TestTakeInherited: the new process takes an inherited fd only if it is
// what the record says: pipes for a container's streams, a pty master for
// a terminal, the same file for a leaked fd.
func TestTakeInherited(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pw.Close() }()
	file, err := os.CreateTemp(t.TempDir(), "leaked")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = file.Close() }()
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ptmx.Close() }()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slave.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	// Each case takes dups, so the test's own files stay open.
	dup := func(f *os.File) int {
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	leak := func() []handoff.FD {
		return []handoff.FD{{FD: dup(file), Dev: uint64(st.Dev), Ino: st.Ino}}
	}
	// A refused record's fds are left open by takeInherited but for those
	// it took before the refusal (closed); open lists those left.
	all := func(r handoff.Container) []int { return inheritedFDs(r) }
	for name, tc := range map[string]struct {
		rec  func() handoff.Container
		says string
		open func(handoff.Container) []int
	}{
		"pipes and a leaked fd": {func() handoff.Container {
			return handoff.Container{StdoutFD: dup(pr), StderrFD: dup(pr), LeakFDs: leak()}
		}, "", nil},
		"a terminal": {func() handoff.Container {
			return handoff.Container{Terminal: true, ConsoleFD: dup(ptmx), StdoutFD: -1, StderrFD: -1}
		}, "", nil},
		"a file as stdout": {func() handoff.Container {
			return handoff.Container{StdoutFD: dup(other), StderrFD: dup(pr)}
		}, "is not a pipe", all},
		"a pipe as console": {func() handoff.Container {
			return handoff.Container{Terminal: true, ConsoleFD: dup(pr), StdoutFD: -1, StderrFD: -1}
		}, "is not a terminal", all},
		"a pty slave as console": {func() handoff.Container {
			return handoff.Container{Terminal: true, ConsoleFD: dup(slave), StdoutFD: -1, StderrFD: -1}
		}, "is not a pty master", all},
		"another file as leaked fd": {func() handoff.Container {
			l := leak()
			_ = unix.Close(l[0].FD)
			l[0].FD = dup(other)
			return handoff.Container{StdoutFD: dup(pr), StderrFD: dup(pr), LeakFDs: l}
		}, "is not the file it was", func(r handoff.Container) []int { return []int{r.LeakFDs[0].FD} }},
		"an fd not open": {func() handoff.Container {
			return handoff.Container{StdoutFD: 999, StderrFD: dup(pr)}
		}, "bad file descriptor", func(r handoff.Container) []int { return []int{r.StderrFD} }},
	} {
		t.Run(name, func(t *testing.T) {
			rec := tc.rec()
			in, err := takeInherited(rec)
			if tc.says == "" {
				if err != nil {
					t.Fatal(err)
				}
				in.close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("takeInherited = %v, want an error saying %q", err, tc.says)
			}
			for _, fd := range tc.open(rec) {
				_ = unix.Close(fd)
			}
		})
	}
}
