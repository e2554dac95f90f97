package monitor

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

func TestCheckOwnChild(t *testing.T) {
	// A child of ours passes.
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := checkOwnChild(cmd.Process.Pid); err != nil {
		t.Errorf("own child: %v", err)
	}
	// Our parent is not our child.
	if err := checkOwnChild(os.Getppid()); !errors.Is(err, errNotOurChild) {
		t.Errorf("parent process: %v, want errNotOurChild", err)
	}
	// A PID with no process passes: an early exit is the reaper's to report.
	if err := checkOwnChild(1 << 22); err != nil {
		t.Errorf("missing pid: %v", err)
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"abc", "0123456789abcdef", "a.b", "a-b_c"} {
		if err := validID(id); err != nil {
			t.Errorf("%q refused: %v", id, err)
		}
	}
	for _, id := range []string{"", "-x", "--help", ".", "..", "a/b", "../x", "a\x00b", string(make([]byte, maxIDLen+1))} {
		if err := validID(id); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q accepted: %v", id, err)
		}
	}
}
