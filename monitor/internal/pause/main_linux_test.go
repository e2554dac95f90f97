package pause

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

const (
	// asGomonEnv makes the test binary act as gomon when started as
	// `<test binary> pause …`, the way Create starts the pause process.
	asGomonEnv = "GOMON_PAUSE_TEST_AS_GOMON"
	// helperEnv selects another helper mode of the test binary.
	helperEnv = "GOMON_PAUSE_TEST_HELPER"
	// modeLinks: join the network namespace file os.Args[1] on a locked
	// thread and print the interface names, comma-separated.
	modeLinks = "links"
)

func TestMain(m *testing.M) {
	if os.Getenv(asGomonEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "pause" {
		opts, err := parseArgs(os.Args[2:])
		if err != nil {
			fmt.Fprintln(os.Stderr, "pause:", err)
			os.Exit(2)
		}
		os.Exit(Main(opts))
	}
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	// Children started by Create re-exec this binary; make them gomon.
	// Under -race, a child would otherwise sleep 1 s at exit.
	for k, v := range map[string]string{asGomonEnv: "1", "GORACE": "atexit_sleep_ms=0"} {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	goleak.VerifyTestMain(m)
}

// parseArgs is a minimal stand-in for gomon's CLI parser: it reads the
// argv form Options.args produces.
func parseArgs(args []string) (Options, error) {
	var o Options
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--base-path" && i+1 < len(args):
			i++
			o.BasePath = args[i]
		case strings.HasPrefix(a, "--pod-id="):
			o.PodID = strings.TrimPrefix(a, "--pod-id=")
		case strings.HasPrefix(a, "--uid-mappings="):
			o.UIDMappings = append(o.UIDMappings, strings.TrimPrefix(a, "--uid-mappings="))
		case strings.HasPrefix(a, "--gid-mappings="):
			o.GIDMappings = append(o.GIDMappings, strings.TrimPrefix(a, "--gid-mappings="))
		case a == "--ipc":
			o.IPC = true
		case a == "--pid":
			o.PID = true
		case a == "--net":
			o.Net = true
		case a == "--user":
			o.User = true
		case a == "--uts":
			o.UTS = true
		default:
			return o, fmt.Errorf("unexpected argument %q", a)
		}
	}
	return o, nil
}

func runHelper(mode string, args []string) int {
	switch mode {
	case modeLinks:
		if len(args) != 1 {
			fmt.Fprintln(os.Stderr, "links: want one namespace file")
			return 2
		}
		runtime.LockOSThread() // setns(CLONE_NEWNET) moves only this thread
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			fmt.Fprintln(os.Stderr, "setns:", err)
			return 1
		}
		ifs, err := net.Interfaces()
		if err != nil {
			fmt.Fprintln(os.Stderr, "interfaces:", err)
			return 1
		}
		names := make([]string, len(ifs))
		for i, ifc := range ifs {
			names[i] = ifc.Name
		}
		fmt.Print(strings.Join(names, ","))
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// testReaper stands in for the monitor's single reaper. Waiting on each
// command is fine here: nothing else in the test process reaps.
type testReaper struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	codes map[int]int // pid → exit status, once reported
}

func (r *testReaper) Start(cmd *exec.Cmd) (<-chan int, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan int, 1)
	pid := cmd.Process.Pid // the user may Release the process
	r.wg.Go(func() {
		_ = cmd.Wait()
		code := exitStatus(cmd.ProcessState)
		r.mu.Lock()
		if r.codes == nil {
			r.codes = make(map[int]int)
		}
		r.codes[pid] = code
		r.mu.Unlock()
		exited <- code
		close(exited)
	})
	return exited, nil
}

func (r *testReaper) code(pid int) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.codes[pid]
	return c, ok
}

// requireRoot skips tests that need root, or fails them when
// GOMON_REQUIRE_ROOT=1 so CI cannot pass by skipping.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("GOMON_REQUIRE_ROOT") == "1" {
		t.Fatal("test needs root and GOMON_REQUIRE_ROOT=1")
	}
	t.Skip("SKIPPED: test needs root to create namespaces and mounts (set GOMON_REQUIRE_ROOT=1 to make this a failure)")
}
