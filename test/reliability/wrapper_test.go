package reliability

// The fault-injecting runtime wrapper. A tiny shell script in a per-test
// directory re-executes this test binary with GOMON_REL_ROLE=runtime; the
// binary then records its argv and open fds, reads the directory's control
// file and either hands over to the real runc (exec, same PID) or injects
// the fault asked for:
//
//	fail        print a message on stderr, exit 1
//	hang        wait until the release file exists, then run runc
//	hang-after  run runc, then wait until the release file exists
//	nopid       exit 0 without running runc (no pidfile)
//	garbagepid  exit 0 after writing "garbage" to the --pid-file
//	decoypid    exit 0 after writing the PID in <dir>/decoy to the --pid-file
//
// A hanging wrapper writes hanging-<verb> (its PID) first, and gives up
// after wrapperHangMax so a test bug cannot leave it behind forever.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	roleEnv      = "GOMON_REL_ROLE"
	roleRuntime  = "runtime"
	roleRecorder = "recorder"
	roleHelper   = "helper"
	dirEnv       = "GOMON_REL_DIR"

	wrapperHangMax = 90 * time.Second
)

// invocation is one recorded run of the wrapper (or recorder).
type invocation struct {
	PID  int      `json:"pid"`
	Argv []string `json:"argv"` // without argv[0]
	FDs  []int    `json:"fds"`  // open at start, the listing's own fd excluded
	Env  []string `json:"env"`
}

// faultRuntime is a wrapper directory.
type faultRuntime struct {
	dir  string
	path string // the script gomon runs as --runtime
}

// newFaultRuntime creates a wrapper around the real runc.
func newFaultRuntime(t *testing.T) *faultRuntime {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fr := &faultRuntime{dir: dir, path: filepath.Join(dir, "runc")}
	if err := os.WriteFile(filepath.Join(dir, "real"), []byte(runcPath(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	writeScript(t, fr.path, roleRuntime, dir, self)
	return fr
}

// writeScript writes an executable sh script that re-executes the test
// binary in role with dir.
func writeScript(t *testing.T, path, role, dir, self string) {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\n%s=%s %s=%s exec %s \"$@\"\n", roleEnv, role, dirEnv, shQuote(dir), shQuote(self))
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// set makes verb (create, exec, start…) behave as mode from now on; ""
// restores pass-through.
func (fr *faultRuntime) set(t *testing.T, verb, mode string) {
	t.Helper()
	ctl := map[string]string{}
	raw, _ := os.ReadFile(filepath.Join(fr.dir, "control")) // missing = empty
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			ctl[k] = v
		}
	}
	if mode == "" {
		delete(ctl, verb)
	} else {
		ctl[verb] = mode
	}
	var b strings.Builder
	for k, v := range ctl {
		fmt.Fprintf(&b, "%s %s\n", k, v)
	}
	writeAtomic(t, filepath.Join(fr.dir, "control"), b.String())
	_ = os.Remove(filepath.Join(fr.dir, "release"))
}

// release lets every hanging wrapper go on.
func (fr *faultRuntime) release(t *testing.T) {
	t.Helper()
	writeAtomic(t, filepath.Join(fr.dir, "release"), "go")
}

// waitHanging waits until a wrapper hangs in verb and returns its PID.
func (fr *faultRuntime) waitHanging(t *testing.T, verb string) int {
	t.Helper()
	got, err := waitForFile(filepath.Join(fr.dir, "hanging-"+verb), hangGuard)
	if err != nil {
		t.Fatalf("the runtime wrapper never hung in %s: %v", verb, err)
	}
	pid, err := strconv.Atoi(got)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// calls returns the recorded invocations.
func (fr *faultRuntime) calls(t *testing.T) []invocation {
	t.Helper()
	return readInvocations(t, filepath.Join(fr.dir, "calls.jsonl"))
}

func readInvocations(t *testing.T, path string) []invocation {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("read invocations: %v", err)
	}
	defer func() { _ = f.Close() }() // read-only
	var out []invocation
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var inv invocation
		if err := json.Unmarshal(sc.Bytes(), &inv); err != nil {
			t.Fatalf("parse invocation %q: %v", sc.Text(), err)
		}
		out = append(out, inv)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// openFDs lists this process's open fds, without the listing's own.
func openFDs() []int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return nil
	}
	defer func() { _ = d.Close() }() // read-only
	names, _ := d.Readdirnames(-1)
	var fds []int
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd != int(d.Fd()) {
			fds = append(fds, fd)
		}
	}
	return fds
}

// record appends one invocation record to path (one O_APPEND write).
func record(path string) {
	inv := invocation{PID: os.Getpid(), Argv: os.Args[1:], FDs: openFDs(), Env: os.Environ()}
	line, _ := json.Marshal(inv)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	_, _ = f.Write(append(line, '\n'))
	_ = f.Close()
}

// recorderMain is the cleanup-command recorder: record, exit 0.
func recorderMain() int {
	record(filepath.Join(os.Getenv(dirEnv), "recorded.jsonl"))
	return 0
}

// runtimeWrapperMain is the runtime wrapper; see the file comment.
func runtimeWrapperMain() int {
	dir := os.Getenv(dirEnv)
	args := os.Args[1:]
	record(filepath.Join(dir, "calls.jsonl"))
	real, err := os.ReadFile(filepath.Join(dir, "real"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-fault: %v\n", err)
		return 125
	}
	verb := ""
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			verb = a
			break
		}
	}
	mode := ""
	raw, _ := os.ReadFile(filepath.Join(dir, "control")) // missing = pass-through
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == verb {
			mode = v
		}
	}
	runReal := func() int {
		cmd := exec.Command(string(real), args...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				return ee.ExitCode()
			}
			fmt.Fprintf(os.Stderr, "runc-fault: %v\n", err)
			return 125
		}
		return 0
	}
	hang := func() bool {
		_ = os.WriteFile(filepath.Join(dir, "hanging-"+verb), []byte(strconv.Itoa(os.Getpid())), 0o644)
		deadline := time.Now().Add(wrapperHangMax)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(dir, "release")); err == nil {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	switch mode {
	case "":
		err := syscall.Exec(string(real), append([]string{string(real)}, args...), os.Environ())
		fmt.Fprintf(os.Stderr, "runc-fault: exec %s: %v\n", real, err)
		return 125
	case "fail":
		fmt.Fprintf(os.Stderr, "runc-fault: injected %s failure\n", verb)
		return 1
	case "hang":
		if !hang() {
			return 3
		}
		return runReal()
	case "hang-after":
		code := runReal()
		if !hang() {
			return 3
		}
		return code
	case "slowpid":
		// runc starts the process, the pidfile appears only 3 s later
		// (a runtime slowed down between the two).
		real := pidFileArg(args)
		tmp := real + ".slow"
		for i, a := range args {
			if a == "--pid-file="+real {
				args[i] = "--pid-file=" + tmp
			}
			if a == "--pid-file" && i+1 < len(args) {
				args[i+1] = tmp
			}
		}
		code := runReal()
		time.Sleep(3 * time.Second)
		_ = os.Rename(tmp, real)
		return code
	case "nopid":
		return 0
	case "garbagepid", "decoypid":
		content := "garbage\n"
		if mode == "decoypid" {
			b, _ := os.ReadFile(filepath.Join(dir, "decoy"))
			content = string(b)
		}
		if p := pidFileArg(args); p != "" {
			_ = os.WriteFile(p, []byte(content), 0o644)
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "runc-fault: unknown mode %q\n", mode)
	return 125
}

// pidFileArg returns the value of --pid-file (either form) in args.
func pidFileArg(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--pid-file="); ok {
			return v
		}
		if a == "--pid-file" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
