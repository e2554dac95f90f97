package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// fixture makes a temp dir holding an executable "runtime" file and a plain
// file "file".
func fixture(t *testing.T) (dir, runtime, file string) {
	t.Helper()
	dir = t.TempDir()
	runtime = filepath.Join(dir, "runtime")
	if err := os.WriteFile(runtime, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, runtime, file
}

func TestValidateServer(t *testing.T) {
	dir, runtime, file := fixture(t)
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name string
		args []string
		want string // "" for success
	}{
		{name: "valid", args: []string{"--runtime", runtime, "--runtime-dir", dir}},
		{name: "valid with root", args: []string{"--runtime", runtime, "--runtime-dir", dir, "--runtime-root", dir}},
		{name: "runtime dir and root may be missing", args: []string{"--runtime", runtime, "--runtime-dir", missing + "/a", "--runtime-root", missing + "/b"}},
		{name: "nothing set", args: nil, want: "--runtime flag not set"},
		{name: "runtime checked before runtime dir", args: []string{"--runtime-dir", dir}, want: "--runtime flag not set"},
		{name: "blank runtime", args: []string{"--runtime", "  ", "--runtime-dir", dir}, want: "--runtime flag not set"},
		{name: "runtime dir not set", args: []string{"--runtime", runtime}, want: "--runtime-dir flag not set"},
		{name: "blank runtime dir", args: []string{"--runtime", runtime, "--runtime-dir", " "}, want: "--runtime-dir flag not set"},
		{name: "flags checked before existence", args: []string{"--runtime", missing}, want: "--runtime-dir flag not set"},
		{name: "runtime missing", args: []string{"--runtime", missing, "--runtime-dir", dir}, want: fmt.Sprintf("--runtime '%s' does not exist", missing)},
		{
			name: "runtime checked before runtime root", args: []string{"--runtime", missing, "--runtime-dir", dir, "--runtime-root", file},
			want: fmt.Sprintf("--runtime '%s' does not exist", missing),
		},
		{
			name: "runtime root is a file", args: []string{"--runtime", runtime, "--runtime-dir", dir, "--runtime-root", file},
			want: fmt.Sprintf("--runtime-root '%s' does not exist", file),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(tt.args, nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate error %q, want %q", err.Error(), tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			if code := ExitCode(err); code != 1 {
				t.Errorf("ExitCode = %d, want 1", code)
			}
		})
	}
}

func TestValidateDoesNotCreate(t *testing.T) {
	dir, runtime, _ := fixture(t)
	runDir := filepath.Join(dir, "run", "dir")
	root := filepath.Join(dir, "root", "dir")
	cfg, err := Parse([]string{"--runtime", runtime, "--runtime-dir", runDir, "--runtime-root", root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{runDir, root} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Validate created %s (stat err %v)", p, err)
		}
	}
}

func TestValidateRuntimeMissingUnwraps(t *testing.T) {
	dir, _, _ := fixture(t)
	cfg := &Config{Command: CommandServer, Runtime: filepath.Join(dir, "nope"), RuntimeDir: dir}
	err := cfg.Validate()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v does not unwrap to fs.ErrNotExist", err)
	}
}

func TestPrepare(t *testing.T) {
	dir, runtime, file := fixture(t)
	tests := []struct {
		name    string
		runDir  string
		root    string
		wantErr bool
	}{
		{name: "creates both with parents", runDir: filepath.Join(dir, "a", "b"), root: filepath.Join(dir, "c", "d")},
		{name: "existing dirs are fine", runDir: dir, root: dir},
		{name: "no runtime root", runDir: filepath.Join(dir, "e")},
		{name: "runtime dir is a file", runDir: file, wantErr: true},
		{name: "runtime root below a file", runDir: dir, root: filepath.Join(file, "x"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{Command: CommandServer, Runtime: runtime, RuntimeDir: tt.runDir, RuntimeRoot: tt.root}
			err := cfg.Prepare()
			if tt.wantErr {
				if err == nil {
					t.Fatal("Prepare succeeded, want an error")
				}
				if code := ExitCode(err); code != 1 {
					t.Errorf("ExitCode = %d, want 1", code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tt.runDir == dir {
				// Existing directories keep their mode.
				if _, err := os.Stat(dir); err != nil {
					t.Fatal(err)
				}
				return
			}
			checkDir(t, tt.runDir, RuntimeDirMode)
			if tt.root != "" {
				checkDir(t, tt.root, RuntimeRootMode)
			}
		})
	}
}

// checkDir checks that p is a directory whose permissions are no wider than
// maxMode (the umask may narrow them).
func checkDir(t *testing.T, p string, maxMode fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	if !fi.IsDir() {
		t.Fatalf("%s is not a directory", p)
	}
	if perm := fi.Mode().Perm(); perm&^maxMode != 0 {
		t.Errorf("%s has mode %v, wider than %v", p, perm, maxMode)
	}
}

func TestPrepareWithoutRuntimeDir(t *testing.T) {
	cfg := &Config{Command: CommandServer}
	if err := cfg.Prepare(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Prepare() = %v, want ErrInvalidConfig", err)
	}
}

func TestValidateRun(t *testing.T) {
	dir, runtime, file := fixture(t)
	tests := []struct {
		name string
		run  RunConfig
		want string
	}{
		{name: "valid absolute runtime", run: RunConfig{Runtime: runtime, Bundle: dir, ID: "x"}},
		{name: "runtime found in PATH", run: RunConfig{Runtime: "sh", Bundle: dir, ID: "x"}},
		{name: "runtime not found", run: RunConfig{Runtime: "gomon-no-such-runtime", Bundle: dir, ID: "x"}, want: "--runtime 'gomon-no-such-runtime' not found"},
		{name: "runtime not executable", run: RunConfig{Runtime: file, Bundle: dir, ID: "x"}, want: fmt.Sprintf("--runtime '%s' not found", file)},
		{name: "bundle missing", run: RunConfig{Runtime: runtime, Bundle: dir + "/nope", ID: "x"}, want: fmt.Sprintf("--bundle '%s/nope' does not exist", dir)},
		{name: "bundle is a file", run: RunConfig{Runtime: runtime, Bundle: file, ID: "x"}, want: fmt.Sprintf("--bundle '%s' is not a directory", file)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{Command: CommandRun, Run: tt.run}
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
		})
	}
}

func TestValidateOtherCommands(t *testing.T) {
	for _, c := range []Command{CommandPause, CommandVersion} {
		cfg := &Config{Command: c}
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%v) = %v, want nil", c, err)
		}
	}
	if err := (&Config{Command: Command(99)}).Validate(); err == nil {
		t.Error("Validate accepted an unknown command")
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{name: "nil", err: nil, want: 0},
		{name: "help", err: &HelpError{Text: "x"}, want: 0},
		{name: "wrapped help", err: fmt.Errorf("parse: %w", &HelpError{}), want: 0},
		{name: "usage", err: &UsageError{Kind: ErrUnknownArgument}, want: 2},
		{name: "wrapped usage", err: fmt.Errorf("parse: %w", &UsageError{}), want: 2},
		{name: "validation", err: &configError{msg: "--runtime flag not set"}, want: 1},
		{name: "other", err: errors.New("boom"), want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.want {
				t.Fatalf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}
