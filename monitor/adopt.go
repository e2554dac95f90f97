package monitor

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
	"github.com/gomon-dev/gomon/monitor/internal/fdstore"
	"github.com/gomon-dev/gomon/monitor/internal/handoff"
	"github.com/gomon-dev/gomon/monitor/internal/pause"
)

// Upgrade in place (docs/upgrade.md): the daemon execs a new gomon binary
// in its own process. execve keeps the PID, so the containers stay the
// children of the same subreaper, their pipes stay open in the process
// (their read ends are kept across the exec), and an exit that happens in
// between stays a zombie until the new process reaps it.
//
// This file is the monitor's half: PrepareHandoff freezes the monitor and
// describes its running containers in the record (package handoff), the
// caller execs, and the new process's Adopt takes the containers over.
// What the record does not carry yet is refused by PrepareHandoff, with
// the reason, and the monitor goes on as before.

// UpgradeState is the record handed to the new binary.
type UpgradeState = handoff.State

// UpgradeSchema is the newest record version this binary writes and
// reads; it reads back to handoff.MinSchema.
const UpgradeSchema = handoff.Schema

// ErrUpgradeSchema is a record of a schema this binary does not know.
var ErrUpgradeSchema = handoff.ErrSchema

// ErrUpgradeRefused is an upgrade the monitor cannot do now: it holds
// something the record does not carry yet, or it did not come to rest in
// time. The monitor is unchanged.
var ErrUpgradeRefused = errors.New("upgrade refused")

// EncodeUpgradeState returns s as the record's bytes, with its schema set.
func EncodeUpgradeState(s *UpgradeState) ([]byte, error) { return handoff.Encode(s) }

// DecodeUpgradeState parses and validates a record; a schema this binary
// does not read is ErrUpgradeSchema. It touches no file descriptor: it is
// the whole of the dry run.
func DecodeUpgradeState(b []byte) (*UpgradeState, error) { return handoff.Decode(b) }

// Handoff is a monitor frozen for an upgrade: no exit is reaped, no
// container output is read, until Abort (or the exec that ends the
// process). Calls must already be held by the caller (the RPC gate of the
// daemon): PrepareHandoff refuses a create in flight but does not stop
// new calls itself.
type Handoff struct {
	m *Monitor
	// containers are the running containers, with their loops stopped
	// (each loop's reader is its pipe read end or pty master).
	containers []*container
	records    []handoff.Container
	exited     []handoff.Tombstone
	// stopped[i][j] is set once loop j of containers[i] was told to stop.
	stopped [][]bool
	kept    []int // fds whose close-on-exec flag Keep cleared
	aborted bool
	// pause and fdSocket are the pod services' records (nil if not
	// started); fdHandoff is what the fd socket's server fds hands over
	// (dups of its listener and connections; it is paused until Abort).
	pause     *handoff.Pause
	fdSocket  *handoff.FDSocket
	fdHandoff *fdstore.Handoff
	fds       *fdstore.Server
}

// PrepareHandoff freezes the monitor and describes its running
// containers, the tombstones of its exited ones and its pod services
// (the pause process, the fd socket). It first ends the attach clients
// and streaming sessions, which an upgrade does not carry (endSessions).
// It refuses (ErrUpgradeRefused, monitor otherwise unchanged) when the
// monitor holds what an upgrade does not carry yet: an output copy for an
// embedder, a create in flight. A container whose exit is being recorded
// is waited for, within ctx; so is the pause process's.
//
// On success the reaper is stopped (exits stay zombies) and every read
// loop has written out what it read and stopped, leaving the rest in its
// pipe. The caller then calls Keep and execs, or calls Abort.
//
// While the monitor is frozen, the caller may start and wait for a child
// of its own (exec.Cmd.Run: the dry run): the reaper does not wait.
func (m *Monitor) PrepareHandoff(ctx context.Context) (*Handoff, error) {
	if err := m.refuseHandoff(); err != nil {
		return nil, err
	}
	if err := m.endSessions(ctx); err != nil {
		return nil, err
	}
	h := &Handoff{m: m}
	// Freeze the reaper with no exit half recorded: a container whose
	// exit was dispatched (its PID no longer subscribed) is finished
	// first, so each container is either running with its exit still to
	// be reaped, or gone from the record.
	for {
		live, err := m.runningContainers()
		if err != nil {
			return nil, err
		}
		m.reaper.mu.Lock()
		var exiting *container
		for _, c := range live {
			if _, ok := m.reaper.subs[c.pid()]; !ok {
				exiting = c
				break
			}
		}
		if exiting == nil {
			h.containers = live
			break
		}
		m.reaper.mu.Unlock()
		select {
		case <-exiting.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: container %s is exiting and its exit is not recorded yet: %w",
				ErrUpgradeRefused, exiting.id, ctx.Err())
		}
	}
	// From here Abort undoes.
	if err := h.podServices(ctx); err != nil {
		h.Abort()
		return nil, err
	}
	for _, c := range h.containers {
		rec, err := c.handoffRecord()
		if err != nil {
			h.Abort()
			return nil, err
		}
		h.records = append(h.records, rec)
	}
	// No container can exit now: the tombstones are all there are, but
	// for an exited container whose waiter has not retired it yet.
	h.exited = m.tombstones()
	// Stop every read loop, then wait for them all: each finishes the
	// write of what it read; the rest stays in its pipe.
	h.stopped = make([][]bool, len(h.containers))
	for i, c := range h.containers {
		h.stopped[i] = make([]bool, len(c.loops))
		for j, l := range c.loops {
			err := ioloop.StopForHandoff(l.r)
			h.stopped[i][j] = err == nil
			if err != nil {
				h.Abort()
				return nil, fmt.Errorf("%w: container %s: %w", ErrUpgradeRefused, c.id, err)
			}
		}
	}
	for i, c := range h.containers {
		for _, l := range c.loops {
			select {
			case <-l.ended:
			case <-ctx.Done():
				h.Abort()
				return nil, fmt.Errorf("%w: container %s: a log write did not finish: %w",
					ErrUpgradeRefused, c.id, ctx.Err())
			}
		}
		// Counted to the last chunk written: the loops have ended.
		h.records[i].Metrics = c.metrics.handoffState()
	}
	return h, nil
}

// refuseHandoff returns why the monitor cannot be handed over now, or nil.
func (m *Monitor) refuseHandoff() error {
	refuse := func(why string) error { return fmt.Errorf("%w: %s", ErrUpgradeRefused, why) }
	m.mu.Lock()
	down := m.shutdown
	m.mu.Unlock()
	if down {
		return refuse("the monitor is shutting down")
	}
	return nil
}

// endSessions ends what an upgrade does not carry: the streaming server
// with its sessions (their clients get a going-away close; a pending
// session's URL stops answering; the new process starts a server on the
// next request) and the attach clients (their connections close after
// what was queued for them; the sockets are carried). Clients reconnect.
// The reaper still runs, so a streaming exec's process is killed and
// reaped here. An upgrade that fails later does not bring them back.
func (m *Monitor) endSessions(ctx context.Context) error {
	m.stream.mu.Lock()
	srv := m.stream.srv
	m.stream.srv = nil // the next request starts a new one
	m.stream.mu.Unlock()
	if srv != nil {
		busy := srv.Busy()
		if err := srv.Close(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrUpgradeRefused, err)
		}
		if busy {
			m.log.Info("upgrade: streaming sessions ended")
		}
	}
	m.mu.Lock()
	cs := m.containersLocked()
	m.mu.Unlock()
	for _, c := range cs {
		n, err := c.attach.DisconnectClients(ctx)
		if err != nil {
			return fmt.Errorf("%w: container %s: %w", ErrUpgradeRefused, c.id, err)
		}
		if n > 0 {
			m.log.Info("upgrade: attach clients disconnected", "container", c.id, "clients", n)
		}
	}
	return nil
}

// podServices describes the pause process and hands over the fd socket;
// the reaper is frozen. The fd socket stops accepting (new connections
// wait in its backlog) and parks its connections, which are handed over
// with the fds they stored: a stored fd lives as long as the connection
// that sent it.
func (h *Handoff) podServices(ctx context.Context) error {
	m := h.m
	m.pod.mu.Lock()
	ps, fds := m.pod.pause, m.pod.fds
	m.pod.mu.Unlock()
	if ps != nil {
		_, subscribed := m.reaper.subs[ps.PID()]
		pid, pidFile, paths, err := ps.Handoff(ctx, !subscribed)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUpgradeRefused, err)
		}
		h.pause = &handoff.Pause{PID: pid, PIDFile: pidFile}
		for _, p := range paths {
			h.pause.Namespaces = append(h.pause.Namespaces, handoff.Namespace{Type: uint8(p.Type), Path: p.Path})
		}
	}
	if fds != nil {
		fh, err := fds.PauseForHandoff()
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUpgradeRefused, err)
		}
		h.fds, h.fdHandoff = fds, fh
		rec := &handoff.FDSocket{Path: fds.Path(), Last: fh.Last}
		if rec.FD, err = rawFD(fh.Listener); err != nil {
			return fmt.Errorf("%w: fd socket: %w", ErrUpgradeRefused, err)
		}
		for _, c := range fh.Conns {
			rc := handoff.FDConn{}
			if rc.FD, err = rawFD(c.Conn); err != nil {
				return fmt.Errorf("%w: fd socket connection: %w", ErrUpgradeRefused, err)
			}
			for _, sl := range c.Slots {
				fd, err := rawFD(sl.File)
				if err != nil {
					return fmt.Errorf("%w: fd socket slot %d: %w", ErrUpgradeRefused, sl.Slot, err)
				}
				rc.Slots = append(rc.Slots, handoff.FDSlot{Slot: sl.Slot, FD: fd})
			}
			rec.Conns = append(rec.Conns, rc)
		}
		h.fdSocket = rec
	}
	return nil
}

// runningContainers returns the running containers, or refuses when a
// create is in flight or a container holds what is not carried yet.
func (m *Monitor) runningContainers() ([]*container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var live []*container
	for _, c := range m.containers {
		st, _ := c.snapshot()
		switch st {
		case stateCreating:
			return nil, fmt.Errorf("%w: container %s is being created", ErrUpgradeRefused, c.id)
		case stateExited:
			continue // its tombstone is carried (tombstones)
		}
		live = append(live, c)
	}
	return live, nil
}

// pid is the container's init PID; the container is running.
func (c *container) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.init.pid
}

// handoffRecord describes a running container, or refuses what the record
// does not carry yet.
func (c *container) handoffRecord() (handoff.Container, error) {
	refuse := func(what string) (handoff.Container, error) {
		return handoff.Container{}, fmt.Errorf("%w: container %s: %s is not carried by an upgrade yet",
			ErrUpgradeRefused, c.id, what)
	}
	r := c.req
	switch {
	case r.Stdout != nil || r.Stderr != nil || r.Input != nil:
		return refuse("an embedder's output copy or input")
	case r.Terminal && (len(c.loops) != 1 || len(c.readEnds) != 1):
		return refuse("this stream layout")
	case !r.Terminal && (len(c.loops) != 2 || len(c.readEnds) != 2):
		return refuse("this stream layout")
	}
	for i, e := range c.readEnds {
		rd, isReader := e.(io.Reader)
		_, hasFD := e.(syscall.Conn)
		if !isReader || !hasFD || c.loops[i].r != rd {
			return refuse("this stream layout")
		}
	}
	sockets := c.attach.HandoffState()
	rec := handoff.Container{
		ID: c.id, PID: c.pid(), BundlePath: r.BundlePath,
		OOMPaths: r.OOMExitPaths, CleanupCmd: r.CleanupCmd, GlobalArgs: r.GlobalArgs,
		CommandArgs: r.CommandArgs, Env: r.Env, Cgroup: uint8(r.Cgroup),
		TraceParent: traceParent(c.traceCtx), Stdin: r.Stdin, StdinFD: -1, StdoutFD: -1, StderrFD: -1,
	}
	var err error
	if r.Terminal {
		// The master is the output and, with Stdin, the input: one fd.
		rec.Terminal = true
		if rec.ConsoleFD, err = rawFD(c.readEnds[0].(syscall.Conn)); err != nil {
			return refuse("an unusable console")
		}
	} else {
		if r.Stdin {
			c.mu.Lock()
			in := c.stdin
			c.mu.Unlock()
			if in != nil {
				f, ok := in.(*os.File)
				if !ok {
					return refuse("this kind of stdin")
				}
				if rec.StdinFD, err = rawFD(f); err != nil {
					return refuse("an unusable stdin")
				}
			}
		}
		if rec.StdoutFD, err = rawFD(c.readEnds[0].(syscall.Conn)); err != nil {
			return refuse("an unusable stdout")
		}
		if rec.StderrFD, err = rawFD(c.readEnds[1].(syscall.Conn)); err != nil {
			return refuse("an unusable stderr")
		}
	}
	for _, f := range c.leak {
		l, err := leakRecord(f)
		if err != nil {
			return refuse(fmt.Sprintf("an unusable leaked fd (%v)", err))
		}
		rec.LeakFDs = append(rec.LeakFDs, l)
	}
	for _, e := range c.exitFiles {
		rec.ExitFiles = append(rec.ExitFiles, handoff.Exit{Path: e.path, Tmp: e.tmp})
	}
	for _, d := range r.LogDrivers {
		rec.LogDrivers = append(rec.LogDrivers, handoff.Log{Type: uint8(d.Type), Path: d.Path, MaxSize: d.MaxSize})
	}
	for _, s := range sockets {
		rec.Attach = append(rec.Attach, handoff.Attach{Path: s.Path, StopAfterStdinEOF: s.StopAfterStdinEOF})
	}
	return rec, nil
}

// leakRecord names a leaked fd and the file it is.
func leakRecord(f *os.File) (handoff.FD, error) {
	fd, err := rawFD(f)
	if err != nil {
		return handoff.FD{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return handoff.FD{}, err
	}
	return handoff.FD{FD: fd, Dev: uint64(st.Dev), Ino: st.Ino}, nil // Dev is not 64-bit on every architecture
}

// tombstones returns the records of the exited containers the monitor
// answers late calls for, oldest first: its tombstones, then the exited
// containers whose waiter has not retired them yet.
func (m *Monitor) tombstones() []handoff.Tombstone {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []handoff.Tombstone
	add := func(t *tombstone) {
		r := handoff.Tombstone{
			ID: t.id, ExitCode: t.status.Code, Signal: int(t.status.Signal), OOMKilled: t.status.OOMKilled,
			OOMInit: t.status.OOMKills.Init, OOMOther: t.status.OOMKills.Other,
			Cgroup: uint8(t.cgroup), GlobalArgs: t.globalArgs,
		}
		if t.metrics != nil {
			id := t.metrics.identity()
			r.Metrics = t.metrics.handoffState()
			r.Identity = &handoff.Identity{PodName: id.PodName, PodNamespace: id.PodNamespace,
				PodUID: id.PodUID, ContainerName: id.ContainerName}
		}
		out = append(out, r)
	}
	for _, t := range m.exited {
		if m.tombs[t.id] == t { // replaced by a container of the same ID otherwise
			add(t)
		}
	}
	for _, c := range m.containers {
		if st, _ := c.snapshot(); st == stateExited {
			add(c.tombstone())
		}
	}
	return out
}

// restoreTombstones remembers the exited containers of a record, as the
// old process did, before any container is adopted (a container of the
// same ID replaces its tombstone, as a create does). With metrics on,
// their series go on from the carried counters (none from a record of
// schema 2, or of another shape: those end with the old process), and the
// pod's identity is taken from them if no container names it.
func (m *Monitor) restoreTombstones(ts []handoff.Tombstone) {
	if n := len(ts) - maxExited; n > 0 { // the old process kept no more: keep the newest
		ts = ts[n:]
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range ts {
		m.gen++
		t := &tombstone{
			id: r.ID, gen: m.gen, cgroup: CgroupManager(r.Cgroup), globalArgs: r.GlobalArgs,
			status: ExitStatus{
				Code: r.ExitCode, Signal: syscall.Signal(r.Signal), OOMKilled: r.OOMKilled,
				OOMKills: OOMKills{Init: r.OOMInit, Other: r.OOMOther},
			},
		}
		if m.metrics != nil && r.Metrics != nil {
			var id bundle.Identity
			if r.Identity != nil {
				id = bundle.Identity{PodName: r.Identity.PodName, PodNamespace: r.Identity.PodNamespace,
					PodUID: r.Identity.PodUID, ContainerName: r.Identity.ContainerName}
			}
			if cm := newContainerMetrics(r.ID, id); cm.restore(r.Metrics) {
				t.metrics = cm
			} else {
				m.log.Warn("metric counters of another shape handed over for an exited container: its series end",
					"container_id", r.ID)
			}
			m.namePod(id)
		}
		if old := m.tombs[r.ID]; old != nil {
			m.dropTomb(old)
		}
		m.tombs[r.ID] = t
		m.exited = append(m.exited, t)
	}
}

// rawFD returns f's descriptor without Fd, which would switch a
// non-blocking pipe or pty master to blocking mode for good (the new
// process's read loops need it non-blocking to be stopped by a deadline).
func rawFD(f syscall.Conn) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// Containers returns the records of the running containers.
func (h *Handoff) Containers() []handoff.Container { return h.records }

// Exited returns the records of the exited containers' tombstones.
func (h *Handoff) Exited() []handoff.Tombstone { return h.exited }

// Pause returns the pause process's record, nil if none was started.
func (h *Handoff) Pause() *handoff.Pause { return h.pause }

// FDSocket returns the fd socket's record, nil if none was started.
func (h *Handoff) FDSocket() *handoff.FDSocket { return h.fdSocket }

// inheritedFDs are the fds of r the new process inherits.
func inheritedFDs(r handoff.Container) []int {
	var fds []int
	if r.Terminal {
		fds = append(fds, r.ConsoleFD)
	} else {
		fds = append(fds, r.StdoutFD, r.StderrFD)
		if r.Stdin && r.StdinFD >= 0 {
			fds = append(fds, r.StdinFD)
		}
	}
	for _, l := range r.LeakFDs {
		fds = append(fds, l.FD)
	}
	return fds
}

// Keep clears the close-on-exec flag of every read end, pty master, stdin
// write end and leaked fd, and of the fd socket's fds, so the exec'd
// binary inherits them. Abort sets it again.
func (h *Handoff) Keep() error {
	for _, fd := range h.fdSocket.FDs() {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keep the fd socket's fd %d across exec: %w", fd, err)
		}
		h.kept = append(h.kept, fd)
	}
	for _, r := range h.records {
		for _, fd := range inheritedFDs(r) {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				return fmt.Errorf("keep fd %d of container %s across exec: %w", fd, r.ID, err)
			}
			h.kept = append(h.kept, fd)
		}
	}
	return nil
}

// Abort undoes PrepareHandoff (and Keep): the read loops start again on
// the same pipes (nothing was lost: what they did not read is still
// there) and the reaper reaps again, recording any exit that came
// meanwhile. A loop stopped in the middle of a log write that is stuck
// (PrepareHandoff gave up on it) is waited for: it cannot be restarted
// before. It is idempotent.
func (h *Handoff) Abort() {
	if h.aborted {
		return
	}
	h.aborted = true
	for _, fd := range h.kept {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC) // our own open fds: cannot fail
	}
	if h.fds != nil {
		h.fdHandoff.Close()
		h.fds.ResumeAfterHandoff()
	}
	kinds := []ioloop.Stream{ioloop.Stdout, ioloop.Stderr}
	for i, stopped := range h.stopped {
		c := h.containers[i]
		// A stopped loop ends after its current write; it is started
		// again on the same pipe, in its place in c.loops (loops that
		// were not stopped go on). The waiter reads c.loops only after
		// its exit arrives, which the frozen reaper cannot deliver
		// before the unlock below.
		old := c.loops
		c.loops = nil
		for j, l := range old {
			if j >= len(stopped) || !stopped[j] { // not reached before a failure
				c.loops = append(c.loops, l)
				continue
			}
			<-l.ended
			ioloop.EndHandoff(l.r)
			c.startStream(l.r, kinds[j]) // a terminal's one loop is stdout
		}
	}
	h.m.reaper.mu.Unlock()
	h.m.reaper.kick()
}

// kick makes the reaper look for exited children now: after an exec no
// SIGCHLD announces the zombies left by the old process, and after a
// frozen spell the one pending SIGCHLD may have been consumed already.
func (r *reaper) kick() {
	select {
	case r.sigc <- syscall.SIGCHLD:
	default: // a wake-up is pending already
	}
}

// Adopt takes over the containers of an upgrade record in the new
// process, after remembering its exited containers' tombstones: their
// read loops start on the inherited pipes or pty master, their logs are
// opened again without truncation, their attach sockets are bound again,
// and each init PID is subscribed to the reaper (an exit that came during
// the exec is a zombie the reaper now reaps, with its real status), its
// OOM watcher and waiter started. It returns how many containers it took
// over; a container it could only take over in part (its log or an attach
// socket failed to open) is counted, and the failure is in the error.
func (m *Monitor) Adopt(s *UpgradeState) (int, error) {
	// First of all, close-on-exec again on every inherited fd, so no
	// runtime or container we start inherits one, whatever happens below.
	for _, fd := range s.FDSocket.FDs() {
		unix.CloseOnExec(fd)
	}
	for _, rec := range s.Containers {
		for _, fd := range inheritedFDs(rec) {
			unix.CloseOnExec(fd)
		}
	}
	m.restoreTombstones(s.Exited)
	errs := m.adoptPod(s)
	n := 0
	for _, rec := range s.Containers {
		err := m.adoptOne(rec)
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", rec.ID, err))
		}
		if err == nil || errors.Is(err, errPartial) {
			n++
		}
	}
	m.reaper.kick()
	return n, errors.Join(errs...)
}

// adoptPod takes over the pause process (Shutdown stops it and removes
// its files, as for one this process started) and serves the inherited
// fd socket.
func (m *Monitor) adoptPod(s *UpgradeState) []error {
	var errs []error
	if p := s.Pause; p != nil {
		pid := p.PID
		if pid > 0 {
			if err := checkOwnChild(pid); err != nil {
				// Not ours to signal: only its files are removed at shutdown.
				errs = append(errs, fmt.Errorf("pause process not adopted: %w", err))
				pid = 0
			}
		}
		var exited <-chan int
		if pid > 0 {
			exited = pauseReaper{m.reaper}.adopt(pid)
		}
		paths := make([]pause.Path, len(p.Namespaces))
		for i, n := range p.Namespaces {
			paths[i] = pause.Path{Type: pause.Namespace(n.Type), Path: n.Path}
		}
		inst := pause.Adopt(pid, p.PIDFile, paths, exited, m.log.With("component", "pause"))
		m.pod.mu.Lock()
		m.pod.pause = inst
		m.pod.mu.Unlock()
		m.log.Info("pause process taken over after an upgrade", "pid", pid)
	}
	if f := s.FDSocket; f != nil {
		srv, err := adoptFDSocket(f, m.log.With("component", "fd_socket"))
		if err != nil {
			errs = append(errs, err)
		}
		if srv != nil {
			m.pod.mu.Lock()
			m.pod.fds = srv
			m.pod.mu.Unlock()
		}
	}
	return errs
}

// adoptFDSocket serves the fd socket of a record: its listener, and its
// connections with their stored fds. Only sockets are taken as the
// listener and connections, as only pipes are for a container; a
// connection that cannot be taken ends (its fds are closed, as at its
// end). The server is nil when the listener could not be taken.
func adoptFDSocket(f *handoff.FDSocket, log *slog.Logger) (*fdstore.Server, error) {
	isSocket := func(fd int) error {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("inherited fd %d: %w", fd, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			return fmt.Errorf("inherited fd %d is not a socket (mode %#o)", fd, st.Mode&unix.S_IFMT)
		}
		return nil
	}
	if err := isSocket(f.FD); err != nil {
		return nil, fmt.Errorf("fd socket not adopted: %w", err)
	}
	var errs []error
	var conns []fdstore.HandoffConn
	for _, c := range f.Conns {
		hc := fdstore.HandoffConn{}
		for _, sl := range c.Slots {
			hc.Slots = append(hc.Slots, fdstore.HandoffSlot{Slot: sl.Slot, File: os.NewFile(uintptr(sl.FD), "fd-socket")})
		}
		if err := isSocket(c.FD); err != nil {
			errs = append(errs, fmt.Errorf("fd socket connection not adopted: %w", err))
			for _, sl := range hc.Slots {
				_ = sl.File.Close()
			}
			continue
		}
		hc.Conn = os.NewFile(uintptr(c.FD), "fd-socket-conn")
		conns = append(conns, hc)
	}
	srv, err := fdstore.Adopt(os.NewFile(uintptr(f.FD), "fd-socket"), f.Path, conns, f.Last, log)
	if err != nil {
		errs = append(errs, fmt.Errorf("fd socket taken over in part: %w", err))
	}
	return srv, errors.Join(errs...)
}

// errPartial marks a container taken over without one of its sinks.
var errPartial = errors.New("taken over in part")

func (m *Monitor) adoptOne(rec handoff.Container) error {
	req := CreateRequest{
		ID: rec.ID, BundlePath: rec.BundlePath, OOMExitPaths: rec.OOMPaths, Stdin: rec.Stdin, Terminal: rec.Terminal,
		CleanupCmd: rec.CleanupCmd, GlobalArgs: rec.GlobalArgs, CommandArgs: rec.CommandArgs,
		Env: rec.Env, Cgroup: CgroupManager(rec.Cgroup),
	}
	for _, e := range rec.ExitFiles {
		req.ExitPaths = append(req.ExitPaths, e.Path)
	}
	for _, d := range rec.LogDrivers {
		req.LogDrivers = append(req.LogDrivers, LogDriver{Type: LogDriverType(d.Type), Path: d.Path, MaxSize: d.MaxSize})
	}
	in, err := takeInherited(rec)
	if err != nil {
		return fmt.Errorf("not adopted: %w", err)
	}
	if err := checkOwnChild(rec.PID); err != nil {
		in.close()
		return fmt.Errorf("not adopted: %w", err)
	}
	logger := m.log.With("container_id", rec.ID)
	c := &container{
		id: rec.ID, req: req, logger: logger, tracer: m.tracer,
		traceCtx: fromTraceParent(rec.TraceParent), done: make(chan struct{}),
	}
	// As the create does (create.go), but the log files keep their
	// contents and the metric counters go on from the handed-over ones.
	c.identity, c.settings = readBundle(req.BundlePath, logger)
	c.attrSet = identityAttrs(req.ID, c.identity)
	if m.metrics != nil {
		c.metrics = newContainerMetrics(req.ID, c.identity)
		if rec.Metrics != nil && !c.metrics.restore(rec.Metrics) {
			logger.Warn("metric counters of another shape handed over: they start again from zero")
		}
	}
	c.attach = ioloop.NewAttachServer(ioloop.AttachOptions{Logger: logger, Stdin: containerStdin{c}})
	if err := m.reserve(c); err != nil {
		in.close()
		return fmt.Errorf("not adopted: %w", err)
	}
	c.leak = in.leak
	for _, e := range rec.ExitFiles {
		c.exitFiles = append(c.exitFiles, exitFile{path: e.Path, tmp: e.Tmp})
	}

	var partial []error
	l, err := openLog(req.LogDrivers, journalFields(req.ID, c.identity, c.settings),
		ioloop.LogOptions{MaxLine: m.cfg.LogMaxLine}, true, logger)
	if err != nil {
		partial = append(partial, fmt.Errorf("log not reopened, output is read and dropped: %w", err))
		l = ioloop.NewLog()
	}
	c.log = l
	c.setRateLimit(m.logRateLimit(c.settings, logger))
	// The stdin before anything can write to it: the attach sockets are
	// bound below.
	if in.console != nil {
		c.console = in.console
		if rec.Stdin {
			c.stdin = in.console
		}
		c.readEnds = []io.Closer{in.console}
		c.startStream(in.console, ioloop.Stdout)
	} else {
		if in.stdin != nil {
			c.stdin = in.stdin
		}
		c.readEnds = []io.Closer{in.stdout, in.stderr}
		c.startStream(in.stdout, ioloop.Stdout)
		c.startStream(in.stderr, ioloop.Stderr)
	}

	initProc := m.reaper.adopt(rec.PID)
	var oomw oomWatcher
	if initProc.alive() {
		if oomw, err = watchOOM(rec.PID, logger); err != nil {
			logger.Warn("no OOM detection for container", "pid", rec.PID, "error", err)
			oomw = nil
		}
	}
	c.created(initProc, oomw)
	// The old process's wait_for_exit_code span ended with it, unexported
	// (a span is exported when it ends): this one takes over, in the same
	// trace.
	wctx, _ := m.tracer.Start(c.traceCtx, "wait_for_exit_code", trace.WithAttributes(c.attrs()...),
		trace.WithAttributes(attribute.Int("pid", rec.PID), attribute.Bool("adopted", true)))
	m.waiters.Add(1)
	go m.waitExit(wctx, c, initProc.exit, oomw)
	for _, a := range rec.Attach {
		if err := c.attach.Listen(a.Path, a.StopAfterStdinEOF); err != nil {
			partial = append(partial, fmt.Errorf("attach socket %s: %w", a.Path, err))
		}
	}
	logger.Info("container taken over after an upgrade", "pid", rec.PID, "alive", initProc.alive())
	if len(partial) > 0 {
		return fmt.Errorf("%w: %w", errPartial, errors.Join(partial...))
	}
	return nil
}

// inherited are the fds of a container record, taken over.
type inherited struct {
	stdout, stderr, stdin *os.File   // pipes; nil for a terminal (stdin: or none)
	console               *ptyMaster // a terminal's pty master
	leak                  []*os.File
}

// takeInherited takes over the fds rec names, checking each is what the
// record says: a record naming an fd that was not inherited must not make
// us take one of our own (the runtime's, the listener).
func takeInherited(rec handoff.Container) (in *inherited, err error) {
	in = &inherited{}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	pipe := func(fd int, name string) (*os.File, error) {
		if err := checkFDType(fd, unix.S_IFIFO, "a pipe"); err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil // pollable: the pipe is non-blocking
	}
	if rec.Terminal {
		if err := checkFDType(rec.ConsoleFD, unix.S_IFCHR, "a terminal"); err != nil {
			return in, err
		}
		// Only a pty master answers TIOCGPTN.
		if _, err := unix.IoctlGetInt(rec.ConsoleFD, unix.TIOCGPTN); err != nil {
			return in, fmt.Errorf("inherited fd %d is not a pty master: %w", rec.ConsoleFD, err)
		}
		if err := unix.SetNonblock(rec.ConsoleFD, true); err != nil { // it is: the flag is the open file's
			return in, fmt.Errorf("set inherited pty master non-blocking: %w", err)
		}
		if in.console, err = newPtyMaster(rec.ConsoleFD, "pty-master"); err != nil {
			return in, err
		}
	} else {
		if in.stdout, err = pipe(rec.StdoutFD, "stdout"); err != nil {
			return in, err
		}
		if in.stderr, err = pipe(rec.StderrFD, "stderr"); err != nil {
			return in, err
		}
		if rec.Stdin && rec.StdinFD >= 0 {
			if in.stdin, err = pipe(rec.StdinFD, "stdin"); err != nil {
				return in, err
			}
		}
	}
	for _, l := range rec.LeakFDs {
		var st unix.Stat_t
		if err := unix.Fstat(l.FD, &st); err != nil {
			return in, fmt.Errorf("inherited leaked fd %d: %w", l.FD, err)
		}
		if uint64(st.Dev) != l.Dev || st.Ino != l.Ino { // Dev is not 64-bit on every architecture
			return in, fmt.Errorf("inherited leaked fd %d is not the file it was (device %d inode %d, now %d %d)",
				l.FD, l.Dev, l.Ino, st.Dev, st.Ino)
		}
		in.leak = append(in.leak, os.NewFile(uintptr(l.FD), "leaked"))
	}
	return in, nil
}

// checkFDType checks that fd is open and of file type typ (S_IFMT bits).
func checkFDType(fd int, typ uint32, what string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("inherited fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != typ {
		return fmt.Errorf("inherited fd %d is not %s (mode %#o)", fd, what, st.Mode&unix.S_IFMT)
	}
	return nil
}

// close closes what was taken.
func (in *inherited) close() {
	for _, f := range []*os.File{in.stdout, in.stderr, in.stdin} {
		if f != nil {
			_ = f.Close()
		}
	}
	if in.console != nil {
		_ = in.console.Close()
	}
	closeFiles(in.leak)
}

// traceParent renders the span of ctx as a W3C traceparent, "" if none.
func traceParent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// fromTraceParent returns a context whose (remote) parent span is tp, or
// a plain one when tp is empty or malformed: the spans then start a trace
// of their own.
func fromTraceParent(tp string) context.Context {
	ctx := context.Background()
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" {
		return ctx
	}
	tid, err1 := trace.TraceIDFromHex(parts[1])
	sid, err2 := trace.SpanIDFromHex(parts[2])
	flags, err3 := hex.DecodeString(parts[3])
	if err1 != nil || err2 != nil || err3 != nil || len(flags) != 1 {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true,
	}))
}
