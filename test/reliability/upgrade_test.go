package reliability

// Upgrade in place (docs/upgrade.md): a pod's daemon execs a new gomon
// binary, several times in a row between two builds, while one container
// logs continuously, one idles and one exits in the middle of a handoff;
// and failed upgrades leave the old daemon serving.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"go.podman.io/common/pkg/resize"
	"golang.org/x/sys/unix"
)

// upgradeRounds is how many upgrades the test does in a row
// (GOMON_UPGRADE_ROUNDS overrides).
const upgradeRounds = 20

var (
	upgradeBuildsOnce sync.Once
	upgradeBuilds     [2]string
	upgradeBuildsErr  error
)

// upgradeBinaries builds gomon twice from this repository, tagged
// upgrade-a and upgrade-b (the buildinfo tag, as the Makefile sets it).
func upgradeBinaries(t *testing.T) [2]string {
	t.Helper()
	upgradeBuildsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gomon-upgrade-builds-")
		if err != nil {
			upgradeBuildsErr = err
			return
		}
		for i, tag := range []string{"upgrade-a", "upgrade-b"} {
			out := filepath.Join(dir, "gomon-"+tag)
			if upgradeBuildsErr = buildGomon("../..", out, tag); upgradeBuildsErr != nil {
				return
			}
			upgradeBuilds[i] = out
		}
	})
	if upgradeBuildsErr != nil {
		t.Fatal(upgradeBuildsErr)
	}
	return upgradeBuilds
}

// buildGomon builds the gomon of the module at src into out, static, with
// the version tag tag.
func buildGomon(src, out, tag string) error {
	cmd := exec.Command("go", "build", "-C", src, "-o", out,
		"-ldflags", "-X github.com/gomon-dev/gomon/cmd/gomon/internal/buildinfo.tag="+tag, "./cmd/gomon")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s from %s: %w: %s", tag, src, err, b)
	}
	return nil
}

// install puts src at dst atomically (rename), as a package update does.
func install(t *testing.T, src, dst string) {
	t.Helper()
	tmp := dst + ".new"
	if err := copyFile(src, tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// gomonUpgrade runs `gomon upgrade --runtime-dir dir [--binary b]` with
// the binary cli and returns its output and whether it succeeded.
func gomonUpgrade(t *testing.T, cli, dir, binary string) (string, bool) {
	t.Helper()
	args := []string{"upgrade", "--runtime-dir", dir}
	if binary != "" {
		args = append(args, "--binary", binary)
	}
	out, err := exec.Command(cli, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// versionTag asks the daemon for its version through the test's
// conmon-rs v1.0 client and returns its tag and PID. That client holds one
// connection for all its calls, and the old process's connections end at
// the exec: the first call after an upgrade fails with "connection
// closed", and the client dials again for the next one. So one failed
// call is allowed here, a second is not.
func versionTag(t *testing.T, s *gomonServer) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	v, err := s.client.Version(ctx, &client.VersionConfig{})
	if err != nil {
		t.Logf("first call after the upgrade, on the connection held across it: %v", err)
		if v, err = s.client.Version(ctx, &client.VersionConfig{}); err != nil {
			t.Fatalf("Version after redial: %v", err)
		}
	}
	return v.Tag, int(v.ProcessID)
}

func execEcho(t *testing.T, s *gomonServer, c *ctr, word string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", word}, Timeout: 20})
	if err != nil {
		t.Fatalf("ExecSyncContainer: %v", err)
	}
	if res.ExitCode != 0 || string(res.Stdout) != word+"\n" {
		t.Fatalf("exec echo %s: exit %d, stdout %q, stderr %q", word, res.ExitCode, res.Stdout, res.Stderr)
	}
}

// counterPad is what follows each number on the logger's stdout lines.
var counterPad = strings.Repeat("0", 100)

// counterScript writes, until killed, the lines "1 <counterPad>", "2
// <counterPad>", … to stdout as fast as awk goes (tens of MB/s: its
// buffered writes keep the pipe full, so a handoff always leaves output in
// it) and "e 1", "e 2", … to stderr one echo at a time.
const counterScript = `awk 'BEGIN { p = sprintf("%0100d", 0); for (i = 1; ; i++) print i, p }' &
i=0; while :; do i=$((i+1)); echo "e $i" >&2; done`

// checkCounter checks that the CRI logs at paths hold, per stream, the
// lines counterScript writes exactly once each and in order, and returns
// how many per stream, the bytes the container wrote (lines with their
// newlines) and the logs' size. Records are joined across P/F
// as the kubelet does; the logs are read as a stream (they are hundreds
// of MiB).
func checkCounter(t *testing.T, paths ...string) (stdout, stderr int, wrote, size int64) {
	t.Helper()
	next := map[string]int{"stdout": 1, "stderr": 1}
	partial := map[string]string{}
	want := func(stream string) string {
		if stream == "stderr" {
			return "e " + strconv.Itoa(next[stream])
		}
		return strconv.Itoa(next[stream]) + " " + counterPad
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReaderSize(f, 1<<20)
		for i := 0; ; i++ {
			line, err := r.ReadString('\n')
			if errors.Is(err, io.EOF) && line == "" {
				break
			}
			if err != nil {
				_ = f.Close()
				t.Fatalf("%s record %d: %q: %v", p, i, line, err)
			}
			size += int64(len(line))
			fields := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
			if len(fields) != 4 || (fields[2] != "P" && fields[2] != "F") || next[fields[1]] == 0 {
				_ = f.Close()
				t.Fatalf("%s record %d: malformed CRI log line %q", p, i, line)
			}
			if _, err := time.Parse(time.RFC3339Nano, fields[0]); err != nil {
				_ = f.Close()
				t.Fatalf("%s record %d: timestamp: %v", p, i, err)
			}
			stream, text := fields[1], partial[fields[1]]+fields[3]
			if fields[2] == "P" {
				partial[stream] = text
				continue
			}
			partial[stream] = ""
			if w := want(stream); text != w {
				_ = f.Close()
				t.Fatalf("%s record %d (%s): line %q, want %q: a line lost, repeated or out of order", p, i, stream, text, w)
			}
			next[stream]++
			wrote += int64(len(text)) + 1
		}
		_ = f.Close()
	}
	return next["stdout"] - 1, next["stderr"] - 1, wrote, size
}

// assertCloexec checks that every fd of pid but 0-2 is close-on-exec
// (/proc/<pid>/fdinfo "flags", octal, O_CLOEXEC 02000000).
func assertCloexec(t *testing.T, pid int) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n, _ := strconv.Atoi(e.Name()); n <= 2 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, perr := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if perr == nil && flags&0o2000000 == 0 {
					target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
					t.Errorf("daemon fd %s (%s) is not close-on-exec: runtimes and containers would inherit it", e.Name(), target)
				}
			}
		}
	}
}

// clientDuringUpgrade waits until the old daemon is paused in its dry run
// (held appears), starts client.New on the daemon's run dir, lets the dry
// run go on once the client's connection is queued, and checks that the
// client attached to the same daemon, now running the build tagged want.
func clientDuringUpgrade(cfg *client.ConmonServerConfig, held, goOn string, pid int, want string) error {
	release := func() { _ = os.WriteFile(goOn, nil, 0o644) }
	defer release()
	if _, err := waitForFile(held, hangGuard); err != nil {
		return fmt.Errorf("the dry run never started: %w", err)
	}
	type result struct {
		cl  *client.ConmonClient
		err error
	}
	res := make(chan result, 1)
	go func() {
		cl, err := client.New(cfg)
		res <- result{cl, err}
	}()
	time.Sleep(300 * time.Millisecond) // the client's connect and Version are queued now
	select {
	case r := <-res:
		if r.err != nil {
			return fmt.Errorf("client.New failed while the daemon was paused: %w", r.err)
		}
		return errors.New("client.New returned while the daemon was paused: its call was not held")
	default:
	}
	release()
	r := <-res
	if r.err != nil {
		return fmt.Errorf("client.New: %w", r.err)
	}
	if int(r.cl.PID()) != pid {
		return fmt.Errorf("client.New attached to pid %d, want %d", r.cl.PID(), pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	v, err := r.cl.Version(ctx, &client.VersionConfig{})
	if err != nil {
		return fmt.Errorf("Version on the new client: %w", err)
	}
	if v.Tag != want {
		return fmt.Errorf("the new client sees tag %q, want %q", v.Tag, want)
	}
	return nil
}

// runcTime is the timestamp of a line of runc's log.
var runcTime = regexp.MustCompile(`time="[^"]*" `)

// upgradeOK runs `gomon upgrade` until it goes through and returns its
// output. A refusal because of an attach client is retried: the test's
// attach clients disconnect right before, and the daemon notices a little
// later. Any other refusal fails the test.
func upgradeOK(t *testing.T, cli, dir, binary string) string {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		out, ok := gomonUpgrade(t, cli, dir, binary)
		if ok && strings.Contains(out, "upgraded") {
			return out
		}
		if !strings.Contains(out, "attach client") || time.Now().After(deadline) {
			t.Fatalf("gomon upgrade failed: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// terminalScript is a terminal container's shell: it writes "t 1",
// "t 2", … a hundred a second, and for each line it reads from its
// terminal it answers "got <line>"; "size" makes it print the terminal's
// size (`stty size`: rows, then columns). The terminal does not echo the
// input, so the log holds only whole lines of the container (a write to a
// terminal is not interleaved with another).
const terminalScript = `stty -echo; (i=0; while :; do i=$((i+1)); echo "t $i"; sleep 0.01; done) &
while read l; do case "$l" in size) stty size;; *) echo "got $l";; esac; done`

// terminalCtr creates and starts a container running terminalScript on a
// terminal, with stdin.
func terminalCtr(t *testing.T, s *gomonServer) *ctr {
	t.Helper()
	c := newCtr(t, func(spec map[string]any) {
		spec["process"].(map[string]any)["terminal"] = true
	}, "sh", "-c", terminalScript)
	if err := createCtr(t, s, c, func(r *client.CreateContainerConfig) { r.Terminal, r.Stdin = true, true }); err != nil {
		t.Fatalf("create the terminal container: %v", err)
	}
	c.runc(t, s, "start", c.id)
	return c
}

// attachConn opens c's attach socket at sock (AttachContainer with
// Passthrough, retried once: the first call after an upgrade may fail on
// the client's connection held across it) and connects to it.
func attachConn(t *testing.T, s *gomonServer, c *ctr, sock string) *net.UnixConn {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		err := s.client.AttachContainer(ctx, &client.AttachConfig{ID: c.id, SocketPath: sock, Passthrough: true})
		cancel()
		if err == nil {
			break
		}
		if attempt > 1 {
			t.Fatalf("AttachContainer: %v", err)
		}
		t.Logf("AttachContainer, first call after the upgrade: %v", err)
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatalf("connect to the attach socket: %v", err)
	}
	return conn
}

// converse attaches to c at sock (AttachContainer, retried once after an
// upgrade), writes in as the container's stdin, reads the attach output
// until it holds want, and disconnects.
func converse(t *testing.T, s *gomonServer, c *ctr, sock, in, want string) {
	t.Helper()
	conn := attachConn(t, s, c, sock)
	defer func() { _ = conn.Close() }()
	attachSay(t, conn, in, want)
}

// attachSay writes in on an attach connection, as the container's stdin,
// and reads its output until it holds want.
func attachSay(t *testing.T, conn *net.UnixConn, in, want string) {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(in)); err != nil {
		t.Fatalf("write to the attach socket: %v", err)
	}
	var got strings.Builder
	buf := make([]byte, 64<<10)
	for !strings.Contains(got.String(), want) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read the attach socket for %q (got %q): %v", want, got.String(), err)
		}
		if n > 1 { // each message is a pipe byte, then the output
			got.Write(buf[1:n])
		}
	}
}

// attachedUntilEOF reads an attach connection until the daemon closes it
// and closes it too: an error if it ends otherwise (a done message, a
// read error, no end within hangGuard).
func attachedUntilEOF(conn *net.UnixConn) error {
	defer func() { _ = conn.Close() }()
	if err := conn.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		switch {
		case errors.Is(err, io.EOF) || (err == nil && n == 0):
			return nil
		case err != nil:
			return err
		case n == 1 && buf[0] == 0: // the done message: the container's output ended
			return errors.New("the daemon sent the done message")
		}
	}
}

// setWindowSize resizes c's terminal (retried once after an upgrade).
func setWindowSize(t *testing.T, s *gomonServer, c *ctr, width, height uint16) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		err := s.client.SetWindowSizeContainer(ctx, &client.SetWindowSizeContainerConfig{
			ID: c.id, Size: &resize.TerminalSize{Width: width, Height: height},
		})
		cancel()
		if err == nil {
			return
		}
		if attempt > 1 {
			t.Fatalf("SetWindowSizeContainer: %v", err)
		}
	}
}

// memoryHog creates and starts a container under an 8 MiB memory limit
// that, on SIGUSR1, becomes `tail /dev/zero`, which buffers a line that
// never ends until the OOM killer kills it. It returns the container and
// its OOM exit path.
func memoryHog(t *testing.T, s *gomonServer) (*ctr, string) {
	t.Helper()
	hog := newCtr(t, func(spec map[string]any) {
		linux := spec["linux"].(map[string]any)
		res, _ := linux["resources"].(map[string]any)
		if res == nil {
			res = map[string]any{}
		}
		mem := map[string]any{"limit": 8 << 20}
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
			mem["swap"] = 8 << 20 // no escape into swap
		}
		res["memory"] = mem
		linux["resources"] = res
	}, "sh", "-c", `trap "exec tail /dev/zero" USR1; while :; do sleep 0.1; done`)
	oomPath := filepath.Join(hog.dir, "oom")
	if err := createCtr(t, s, hog, func(r *client.CreateContainerConfig) { r.OOMExitPaths = []string{oomPath} }); err != nil {
		t.Fatalf("create the memory hog: %v", err)
	}
	hog.runc(t, s, "start", hog.id)
	return hog, oomPath
}

// execSync runs command in c and returns the answer.
func execSync(t *testing.T, s *gomonServer, c *ctr, command ...string) *client.ExecContainerResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: command, Timeout: 20})
	if err != nil {
		t.Fatalf("ExecSyncContainer: %v", err)
	}
	return res
}

// footprint is what a daemon holds, from /proc.
type footprint struct {
	fds, threads int
	rssKiB       int64
}

func footprintOf(t *testing.T, pid int) footprint {
	t.Helper()
	return footprint{fds: fdCount(t, pid), threads: int(procStatus(t, pid, "Threads")), rssKiB: procStatus(t, pid, "VmRSS") >> 10}
}

// The bounds of the comparison of an upgraded daemon with a fresh one
// (TestUpgradeInPlace): the fds must be the same; the Go runtime's
// threads depend on how many blocking syscalls (log writes) happened at
// once, so they may differ by threadMargin; VmRSS may exceed the fresh
// daemon's by rssFactor plus rssSlackKiB (heap growth under the loggers'
// load is not deterministic: the two differed by at most 0.7 MiB in five
// runs, at 14.3 to 15 MiB each).
const (
	threadMargin = 4
	rssFactor    = 1.0
	rssSlackKiB  = 4 << 10
)

// The upgrade's files in the run directory (StateName and ProbeName in
// cmd/gomon/internal/upgrade).
const (
	stateRecord = "gomon-upgrade-state.json"
	probeRecord = "gomon-upgrade-probe.json"
)

// onStateDryRun is the shell test, in a wrapper of the new binary, for
// the dry run on the real state record (the old monitor is frozen then),
// not the preflight's on the probe.
const onStateDryRun = `[ "$1" = upgrade ] && [ "$2" = --check-state ] && [ "${3##*/}" = ` + stateRecord + ` ]`

// TestUpgradeInPlace: a pod goes through several upgrades in a row
// between two builds: a container logging continuously, one on a
// terminal (written to, attached to and resized between upgrades), an
// idle one, one that exits during a handoff and one that is OOM killed
// after the last. Every log stays byte-exact and in order, every
// container keeps its PID, the one that exited during a handoff gets its
// real exit code (and its late calls are answered as before), Version
// reports the new build, exec sync, attach, resize and ReopenLog work,
// OOM is detected; the upgraded daemon holds the same fds, about the
// same threads and memory as a fresh one with the same containers; and a
// refused upgrade (missing binary, a binary that exits at once) leaves
// the old daemon serving with nothing lost.
func TestUpgradeInPlace(t *testing.T) {
	requireRoot(t)
	bins := upgradeBinaries(t)
	rounds := upgradeRounds
	if v, err := strconv.Atoi(os.Getenv("GOMON_UPGRADE_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}

	installDir := t.TempDir()
	installed := filepath.Join(installDir, "gomon")
	install(t, bins[0], installed)
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = installed
	daemonLog := withDaemonLog(t, cfg)
	s := startGomon(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(daemonLog)
			t.Logf("daemon log:\n%s", b)
		}
	})

	start := time.Now()
	logger := running(t, s, nil, "sh", "-c", counterScript)
	idle := running(t, s, nil, "sleep", "1000000")
	term := terminalCtr(t, s)
	termSock := filepath.Join(t.TempDir(), "attach-term")
	converse(t, s, term, termSock, "ping-0\n", "got ping-0")
	hog, oomPath := memoryHog(t, s)
	// The exiter exits with 7 on SIGTERM (the trap runs after the current
	// short sleep).
	exiter := running(t, s, nil, "sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.1; done`)

	// A wrapper around the real binary that, during the dry run on the
	// state record (the old monitor is frozen then; the preflight's probe
	// comes earlier), makes the exiter exit and waits until it is a
	// zombie: its exit falls between the two processes.
	wrapper := filepath.Join(installDir, "gomon-exit-during-upgrade")
	script := fmt.Sprintf(`#!/bin/sh
if `+onStateDryRun+`; then
	kill -TERM %d
	i=0
	while [ $i -lt 200 ]; do
		case "$(cat /proc/%d/stat 2>/dev/null)" in *") Z "*|"") break;; esac
		sleep 0.05; i=$((i+1))
	done
fi
exec %s "$@"
`, exiter.pid, exiter.pid, installed)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A wrapper that holds the dry run on the state record (the old
	// daemon is paused then) until the test says go on: calls made
	// meanwhile wait in the backlog.
	held, goOn := filepath.Join(installDir, "dry-run-held"), filepath.Join(installDir, "go-on")
	holder := filepath.Join(installDir, "gomon-hold-dry-run")
	script = fmt.Sprintf(`#!/bin/sh
if `+onStateDryRun+`; then
	echo held > %s
	i=0
	while [ ! -e %s ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
fi
exec %s "$@"
`, held, goOn, installed)
	if err := os.WriteFile(holder, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A binary that knows another state schema: its dry run reads the
	// record with the schema number changed (the real binary's check then
	// refuses it as a binary of another schema would).
	otherSchema := filepath.Join(installDir, "gomon-other-schema")
	script = fmt.Sprintf(`#!/bin/sh
if [ "$1" = upgrade ] && [ "$2" = --check-state ]; then
	sed 's/"schema":[0-9]*,/"schema":99,/' "$3" > %[1]s.json && exec %[2]s upgrade --check-state %[1]s.json
fi
exec %[2]s "$@"
`, otherSchema, installed)
	if err := os.WriteFile(otherSchema, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A binary that exits at once, dry run included.
	broken := filepath.Join(installDir, "gomon-broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho broken build >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	tags := []string{"upgrade-a", "upgrade-b"}
	steadyFDs := 0
	var exiterAnswer *client.ExecContainerResult
	if tag, pid := versionTag(t, s); tag != tags[0] || pid != s.pid {
		t.Fatalf("before: Version tag %q pid %d, want %q pid %d", tag, pid, tags[0], s.pid)
	}
	for round := 1; round <= rounds; round++ {
		next := round % 2
		install(t, bins[next], installed)
		binary := "" // the path the daemon was started from
		var during chan error
		switch round {
		case 1:
			binary = wrapper
		case 3:
			// A new client (client.New, which calls Version on a
			// connection of its own) made while the daemon is paused:
			// its call waits in the backlog and the new process answers.
			binary = holder
			during = make(chan error, 1)
			go func() { during <- clientDuringUpgrade(cfg, held, goOn, s.pid, tags[next]) }()
		}
		time.Sleep(200 * time.Millisecond) // let the logger write between upgrades
		out := upgradeOK(t, installed, s.runDir, binary)
		if during != nil {
			if err := <-during; err != nil {
				t.Fatalf("round %d: a client made during the upgrade: %v", round, err)
			}
		}
		t.Logf("round %d: %s", round, out)
		if tag, pid := versionTag(t, s); tag != tags[next] || pid != s.pid {
			t.Fatalf("round %d: Version tag %q pid %d, want %q pid %d", round, tag, pid, tags[next], s.pid)
		}
		execEcho(t, s, idle, fmt.Sprintf("round-%d", round))
		assertCloexec(t, s.pid) // the inherited fds are close-on-exec again
		// Upgrades do not accumulate fds: from round 4 on (the exiter is
		// gone, round 3's extra client connection ended with round 4's
		// exec) every round ends with the same count.
		fds := fdCount(t, s.pid)
		switch {
		case round == 4:
			steadyFDs = fds
		case round > 4 && fds != steadyFDs:
			t.Errorf("round %d: daemon has %d fds, %d after round 4", round, fds, steadyFDs)
		}
		t.Logf("round %d: fds %d, threads %d, VmRSS %d KiB", round, fds, procStatus(t, s.pid, "Threads"), procStatus(t, s.pid, "VmRSS")>>10)
		if round == 1 {
			if code := exiter.exitCode(t); code != 7 {
				t.Fatalf("container that exited during the upgrade: exit file %d, want 7", code)
			}
			if !strings.Contains(out, "5 container(s)") {
				t.Errorf("round 1 should carry 5 containers (one a zombie): %s", out)
			}
			// A late call for the exited container: the runtime's
			// answer (the monitor remembers it); the same after the
			// last upgrade.
			exiterAnswer = execSync(t, s, exiter, "true")
			t.Logf("exec in the exited container: exit %d, stderr %q", exiterAnswer.ExitCode, exiterAnswer.Stderr)
		}

		// Failed upgrades: the daemon stays this build and keeps serving.
		if round == 2 {
			// The binary at the daemon's start path is gone (the default
			// binary), then an explicit one exits at once, then one knows
			// another schema.
			// Last, one whose dry runs pass and which is gone by the exec:
			// the exec itself fails, past Keep, and everything is undone.
			vanishing := filepath.Join(installDir, "gomon-vanishing")
			if err := os.WriteFile(vanishing, []byte("#!/bin/sh\nif "+onStateDryRun+"; then rm -f \"$0\"; fi\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			// The first three are refused before the daemon pauses (the
			// preflight): an attach client connected meanwhile stays
			// connected. The last one, refused past the pause, ends it.
			fdsBefore := fdCount(t, s.pid)
			attached := attachConn(t, s, term, termSock)
			for _, bad := range []string{"", broken, otherSchema, vanishing} {
				if bad == "" {
					if err := os.Rename(installed, installed+".away"); err != nil {
						t.Fatal(err)
					}
				}
				out, ok := gomonUpgrade(t, bins[0], s.runDir, bad)
				if ok || !strings.Contains(out, "refused") {
					t.Fatalf("upgrade to %q: ok=%v, output %q; want a refusal", bad, ok, out)
				}
				t.Logf("refused as expected: %s", out)
				if tag, pid := versionTag(t, s); tag != tags[next] || pid != s.pid {
					t.Fatalf("after a refused upgrade: Version tag %q pid %d, want %q pid %d", tag, pid, tags[next], s.pid)
				}
				execEcho(t, s, idle, "still-serving")
				if bad == "" {
					if err := os.Rename(installed+".away", installed); err != nil {
						t.Fatal(err)
					}
				}
				if bad == otherSchema && !strings.Contains(out, "unknown upgrade state schema: schema 99") {
					t.Errorf("refusal for another schema does not say so: %s", out)
				}
				if bad == vanishing && !strings.Contains(out, "exec "+vanishing+": no such file or directory") {
					t.Errorf("refusal for a failed exec does not say so: %s", out)
				}
				if bad == otherSchema {
					// Still connected: it gets what the terminal echoes.
					attachSay(t, attached, "still-attached\n", "got still-attached")
				}
			}
			if err := attachedUntilEOF(attached); err != nil {
				t.Errorf("attach client during an upgrade refused past the pause: %v, want its connection closed", err)
			}
			// Nothing the refused upgrades opened (state, listener and
			// control dups) is left, and the pipes are close-on-exec again.
			if after := fdCount(t, s.pid); after != fdsBefore {
				t.Errorf("daemon fds %d before the refused upgrades, %d after", fdsBefore, after)
			}
			assertCloexec(t, s.pid)
		}

		// The terminal: its input and output go on through its attach
		// socket, bound again by each new process; every fifth round it
		// is resized, and its shell sees the new size. (Last in the
		// round: the daemon notices a little later that the attach
		// client left, and the fd counts above must not see it.)
		converse(t, s, term, termSock, fmt.Sprintf("ping-%d\n", round), fmt.Sprintf("got ping-%d", round))
		if round%5 == 0 {
			setWindowSize(t, s, term, uint16(80+round), uint16(20+round))
			converse(t, s, term, termSock, "size\n", fmt.Sprintf("%d %d", 20+round, 80+round))
		}
	}

	// The late call for the exited container is answered as after round 1
	// (the runtime's answer, but for its log's timestamp), not as for an
	// unknown container.
	untimed := func(b []byte) string { return runcTime.ReplaceAllString(string(b), "") }
	if got := execSync(t, s, exiter, "true"); got.ExitCode != exiterAnswer.ExitCode ||
		untimed(got.Stderr) != untimed(exiterAnswer.Stderr) {
		t.Errorf("exec in the exited container after %d upgrades: exit %d, stderr %q; after round 1: exit %d, stderr %q",
			rounds, got.ExitCode, got.Stderr, exiterAnswer.ExitCode, exiterAnswer.Stderr)
	}

	// A fresh daemon of the same build with the same containers (a
	// logger, an idle one, a terminal with its attach socket bound, a
	// memory hog, one exited): the upgraded daemon holds as many fds, and
	// about as many threads and as much memory.
	// (Round 3's extra client holds a connection until round 4's exec.)
	if rounds >= 4 {
		compareWithFresh(t, bins[rounds%2], s.pid)
	}

	// Every container kept its PID: the same processes run (or ran).
	for _, c := range []*ctr{logger, idle, term, hog} {
		if !processExists(int(c.pid)) {
			t.Errorf("container %s pid %d is gone", c.id, c.pid)
		}
	}
	for _, name := range []string{stateRecord, probeRecord} {
		if _, err := os.Stat(filepath.Join(s.runDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("upgrade file %s left behind (stat: %v)", name, err)
		}
	}

	// Log rotation after the upgrades: the kubelet renames the file and
	// asks for a reopen; the output goes on in a new file.
	rotated := logger.logPath + ".1"
	if err := os.Rename(logger.logPath, rotated); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: logger.id}); err != nil {
		t.Fatalf("ReopenLogContainer after the upgrades: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // some output into the new file

	// Stop the logger; its logs must hold every line once, in order.
	logger.runc(t, s, "kill", logger.id, "KILL")
	if code := logger.exitCode(t); code != 137 {
		t.Errorf("logger exit code %d, want 137", code)
	}
	if fi, err := os.Stat(logger.logPath); err != nil || fi.Size() == 0 {
		t.Errorf("nothing logged after ReopenLog (%v)", err)
	}
	o, e, wrote, logged := checkCounter(t, rotated, logger.logPath)
	elapsed := time.Since(start)
	t.Logf("logger wrote %d stdout and %d stderr lines across %d upgrades: %d MiB in %s (%.1f MiB/s), %d MiB of CRI log",
		o, e, rounds, wrote>>20, elapsed.Round(time.Millisecond), float64(wrote)/(1<<20)/elapsed.Seconds(), logged>>20)
	if o < 100000 || e < 1000 {
		t.Errorf("logger wrote only %d/%d lines: it did not run across the upgrades", o, e)
	}
	idle.runc(t, s, "kill", idle.id, "KILL")
	if code := idle.exitCode(t); code != 137 {
		t.Errorf("idle exit code %d, want 137", code)
	}

	// OOM is detected after the upgrades: the last process armed the
	// watcher again.
	hog.runc(t, s, "kill", hog.id, "USR1")
	if code := hog.exitCode(t); code != 137 {
		t.Errorf("memory hog exit code %d, want 137", code)
	}
	if _, err := os.Stat(oomPath); err != nil {
		t.Errorf("memory hog OOM killed after the upgrades, but no OOM file: %v", err)
	}

	// The terminal's log holds every line of its counter and every
	// answer once, in order, and the size it printed last.
	setWindowSize(t, s, term, 132, 43)
	converse(t, s, term, termSock, "size\n", "43 132")
	term.runc(t, s, "kill", term.id, "KILL")
	if code := term.exitCode(t); code != 137 {
		t.Errorf("terminal container exit code %d, want 137", code)
	}
	var answers []string
	sizes, ticks, stillAttached := 0, 0, 0
	for _, line := range logLines(t, term.logPath) {
		line = strings.TrimSuffix(line, "\r") // the terminal's ONLCR
		switch {
		case line == "got still-attached": // round 2's refused upgrades
			stillAttached++
		case strings.HasPrefix(line, "got "):
			answers = append(answers, line)
		case strings.HasPrefix(line, "t "):
			if want := fmt.Sprintf("t %d", ticks+1); line != want {
				t.Fatalf("terminal log: %q after %d counter lines, want %q: a line lost, repeated or out of order", line, ticks, want)
			}
			ticks++
		case line == "43 132":
			sizes++
		}
	}
	t.Logf("terminal: %d counter lines, %d answers", ticks, len(answers))
	for i, a := range answers {
		if want := fmt.Sprintf("got ping-%d", i); a != want {
			t.Fatalf("terminal log answer %d is %q, want %q: a line lost, repeated or out of order (all: %q)", i, a, want, answers)
		}
	}
	if len(answers) != rounds+1 || sizes != 1 || ticks < 100 || (rounds >= 2) != (stillAttached == 1) {
		t.Errorf("terminal log: %d answers (want %d), the last size %d times (want once), %d counter lines (want 100 or more), %d still-attached answers",
			len(answers), rounds+1, sizes, ticks, stillAttached)
	}
	if z := zombiesOf(t, s.pid); len(z) > 0 {
		t.Errorf("zombies left under the daemon: %v", z)
	}
}

// compareWithFresh starts a fresh daemon of binary with containers like
// TestUpgradeInPlace's at the end of its upgrades and compares the
// upgraded daemon's (pid) footprint with it: the same fds, threads within
// threadMargin, VmRSS within rssFactor and rssSlackKiB. The fresh daemon
// is stopped before it returns.
func compareWithFresh(t *testing.T, binary string, pid int) {
	t.Helper()
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = binary
	withDaemonLog(t, cfg)
	f := startGomon(t, cfg)
	defer f.stop(t)
	logger := running(t, f, nil, "sh", "-c", counterScript)
	running(t, f, nil, "sleep", "1000000")
	term := terminalCtr(t, f)
	converse(t, f, term, filepath.Join(t.TempDir(), "attach-term"), "ping\n", "got ping")
	memoryHog(t, f)
	exited := running(t, f, nil, "sh", "-c", "exit 7")
	if code := exited.exitCode(t); code != 7 {
		t.Fatalf("fresh daemon: exit code %d, want 7", code)
	}
	execEcho(t, f, logger, "fresh")
	// Both loggers run; let the fresh daemon's settle as the upgraded
	// one's has (a reading, not a timed check).
	time.Sleep(time.Second)
	up, fresh := footprintOf(t, pid), footprintOf(t, f.pid)
	t.Logf("upgraded daemon: %d fds, %d threads, VmRSS %d KiB; fresh daemon: %d fds, %d threads, VmRSS %d KiB",
		up.fds, up.threads, up.rssKiB, fresh.fds, fresh.threads, fresh.rssKiB)
	if up.fds != fresh.fds {
		t.Errorf("upgraded daemon has %d fds, a fresh one %d", up.fds, fresh.fds)
		for _, p := range []int{pid, f.pid} {
			ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
			var targets []string
			for _, e := range ents {
				target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, e.Name()))
				targets = append(targets, e.Name()+"="+target)
			}
			t.Logf("pid %d fds: %v", p, targets)
		}
	}
	if d := up.threads - fresh.threads; d > threadMargin || d < -threadMargin {
		t.Errorf("upgraded daemon has %d threads, a fresh one %d (margin %d)", up.threads, fresh.threads, threadMargin)
	}
	if limit := int64(float64(fresh.rssKiB)*rssFactor) + rssSlackKiB; up.rssKiB > limit {
		t.Errorf("upgraded daemon VmRSS %d KiB, over %d KiB (a fresh one: %d KiB)", up.rssKiB, limit, fresh.rssKiB)
	}
}

// attachTick opens c's attach socket at sock (attachConn: retried once
// after an upgrade), waits for output holding "tick" and returns the
// connection, for the caller to close.
func attachTick(t *testing.T, s *gomonServer, c *ctr, sock string) *net.UnixConn {
	t.Helper()
	conn := attachConn(t, s, c, sock)
	if err := conn.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			_ = conn.Close()
			t.Fatalf("read the attach socket: %v", err)
		}
		// Each message is a pipe byte, then the output.
		if n > 1 && strings.Contains(string(buf[1:n]), "tick") {
			return conn
		}
	}
}

// attachWrite opens c's attach socket at sock (AttachContainer with
// Passthrough, retried once after an upgrade), writes data as the
// container's stdin and disconnects.
func attachWrite(t *testing.T, s *gomonServer, c *ctr, sock, data string) {
	t.Helper()
	conn := attachConn(t, s, c, sock)
	defer func() { _ = conn.Close() }()
	if _, err := conn.Write([]byte(data)); err != nil {
		t.Fatalf("write to the attach socket: %v", err)
	}
}

// waitForLine waits for a line in the CRI log at path.
func waitForLine(t *testing.T, path, line string) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		recs, _ := readCRILog(path)
		for _, r := range recs {
			if r.content == line {
				return
			}
		}
	}
	t.Fatalf("%q never appeared in %s", line, path)
}

// TestUpgradeEndsAttachClients: a connected attach client does not stop
// an upgrade: its connection is closed cleanly, and the attach socket
// works in the new process, as do stdin, OOM detection and the upgrade
// span.
func TestUpgradeEndsAttachClients(t *testing.T) {
	requireRoot(t)
	bins := upgradeBinaries(t)
	installed := filepath.Join(t.TempDir(), "gomon")
	install(t, bins[0], installed)
	recv, endpoint := startOTLPHTTPReceiver(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = installed
	cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: endpoint}
	s := startGomon(t, cfg)

	ticker := running(t, s, nil, "sh", "-c", `i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done`)
	// A memory hog, OOM killed after the upgrade: the new process must
	// see it.
	hog, oomPath := memoryHog(t, s)

	// A container reading its stdin (cat): input written through its
	// attach socket before the upgrade and after it reaches its log.
	echo := newCtr(t, nil, "cat")
	if err := createCtr(t, s, echo, func(r *client.CreateContainerConfig) { r.Stdin = true }); err != nil {
		t.Fatalf("create the stdin container: %v", err)
	}
	echo.runc(t, s, "start", echo.id)
	echoSock := filepath.Join(t.TempDir(), "attach-stdin")
	attachWrite(t, s, echo, echoSock, "before the upgrade\n")
	waitForLine(t, echo.logPath, "before the upgrade")

	// An attach client connected at the upgrade: the old process closes
	// its connection (no done message: the output goes on), and it
	// connects again to the new one.
	sock := filepath.Join(t.TempDir(), "attach")
	attached := attachTick(t, s, ticker, sock)
	out, ok := gomonUpgrade(t, bins[1], s.runDir, bins[1])
	if !ok {
		_ = attached.Close()
		t.Fatalf("upgrade with an attach client: %s", out)
	}
	t.Log(out)
	if err := attachedUntilEOF(attached); err != nil {
		t.Errorf("attach client connected at the upgrade: %v, want its connection closed", err)
	}
	if tag, _ := versionTag(t, s); tag != "upgrade-b" {
		t.Fatalf("after the upgrade: Version tag %q", tag)
	}
	// The attach socket was bound again by the new process.
	_ = attachTick(t, s, ticker, sock).Close()
	// The stdin pipe was carried: input still reaches the container.
	attachWrite(t, s, echo, echoSock, "after the upgrade\n")
	waitForLine(t, echo.logPath, "after the upgrade")
	// OOM is still detected: the new process armed the watcher again.
	hog.runc(t, s, "kill", hog.id, "USR1")
	if code := hog.exitCode(t); code != 137 {
		t.Errorf("memory hog exit code %d, want 137", code)
	}
	if _, err := os.Stat(oomPath); err != nil {
		t.Errorf("memory hog OOM killed after the upgrade, but no OOM file: %v", err)
	}
	// The new process exported an upgrade span covering the pause.
	var span *otlpSpan
	for deadline := time.Now().Add(hangGuard); span == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		recv.mu.Lock()
		for i := range recv.spans {
			if recv.spans[i].name == "upgrade" {
				span = &recv.spans[i]
			}
		}
		recv.mu.Unlock()
	}
	switch {
	case span == nil:
		t.Error("no upgrade span at the collector")
	case span.strs["from"] != "0.5.0 (upgrade-a)" || span.strs["to"] != "0.5.0 (upgrade-b)" || span.ints["containers"] != 3 || span.ints["pause_us"] <= 0:
		t.Errorf("upgrade span: %+v", *span)
	}

	// SIGHUP upgrades too, to the binary at the daemon's start path.
	install(t, bins[0], installed)
	if err := unix.Kill(s.pid, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var tag string
	for deadline := time.Now().Add(hangGuard); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if tag, _ = versionTag(t, s); tag == "upgrade-a" {
			break
		}
	}
	if tag != "upgrade-a" {
		t.Fatalf("after SIGHUP: Version tag %q, want upgrade-a", tag)
	}
	_ = attachTick(t, s, ticker, sock).Close()

	ticker.runc(t, s, "kill", ticker.id, "KILL")
	if code := ticker.exitCode(t); code != 137 {
		t.Errorf("ticker exit code %d", code)
	}
}

// TestUpgradePause measures the pause of an upgrade (from the old process
// no longer accepting to the new one serving, as the daemon reports it)
// for pods of 1, 10 and 50 idle containers: the median of 7 upgrades each.
// A measurement, not a check: it runs only with GOMON_UPGRADE_PAUSE=1.
func TestUpgradePause(t *testing.T) {
	if os.Getenv("GOMON_UPGRADE_PAUSE") != "1" {
		t.Skip("a measurement: set GOMON_UPGRADE_PAUSE=1 to run it")
	}
	requireRoot(t)
	bins := upgradeBinaries(t)
	for _, n := range []int{1, 10, 50} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			cfg := serverConfig(t, runcPath(t))
			cfg.ConmonServerPath = bins[0]
			s := startGomon(t, cfg)
			for range n {
				running(t, s, nil, "sleep", "1000000")
			}
			var pauses []time.Duration
			for i := range 7 {
				out, ok := gomonUpgrade(t, bins[0], s.runDir, bins[(i+1)%2])
				if !ok {
					t.Fatalf("upgrade: %s", out)
				}
				_, rest, _ := strings.Cut(out, "paused ")
				d, err := time.ParseDuration(strings.TrimSuffix(strings.Fields(rest)[0], ","))
				if err != nil {
					t.Fatalf("no pause in %q: %v", out, err)
				}
				pauses = append(pauses, d)
			}
			slices.Sort(pauses)
			t.Logf("%d containers: pause median %v (min %v, max %v) over %d upgrades", n, pauses[len(pauses)/2], pauses[0], pauses[len(pauses)-1], len(pauses))
		})
	}
}
