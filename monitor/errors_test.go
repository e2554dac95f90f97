package monitor

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestRuntimeErrorText(t *testing.T) {
	tests := []struct {
		err  RuntimeError
		want string
	}{
		{RuntimeError{Code: 1}, "child command exited with: 1"},
		{RuntimeError{Code: 1, Stderr: "x not found in $PATH"}, "child command exited with: 1: x not found in $PATH"},
		{RuntimeError{Code: 137, Signal: unix.SIGKILL}, "child command exited with signal: 9"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
