package monitor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Input checks. A monitor takes IDs and paths from a client it trusts to
// be CRI-O, but a wrong request must still get a clear error rather than
// reach the runtime's command line or the daemon's working directory.

// maxIDLen bounds container IDs (CRI-O's are 64 hex characters).
const maxIDLen = 1024

// validID refuses IDs the runtime would take as a flag or a path: empty,
// over maxIDLen, starting with '-', "." or "..", or holding '/' or NUL.
func validID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("container id is required: %w", ErrInvalidArgument)
	case len(id) > maxIDLen:
		return fmt.Errorf("container id of %d bytes is over %d: %w", len(id), maxIDLen, ErrInvalidArgument)
	case strings.HasPrefix(id, "-"), id == ".", id == "..", strings.ContainsAny(id, "/\x00"):
		return fmt.Errorf("invalid container id %q: %w", id, ErrInvalidArgument)
	}
	return nil
}

// absolute refuses relative paths: the daemon's working directory is
// whatever its launcher's was, so a relative path would land somewhere
// nobody looks.
func absolute(what string, paths ...string) error {
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
			return fmt.Errorf("%s %q is not an absolute path: %w", what, p, ErrInvalidArgument)
		}
	}
	return nil
}

// validateCreate checks a CreateRequest before anything is opened.
func validateCreate(req CreateRequest) error {
	if err := validID(req.ID); err != nil {
		return err
	}
	if req.BundlePath == "" {
		return fmt.Errorf("bundle path is required: %w", ErrInvalidArgument)
	}
	if err := absolute("bundle path", req.BundlePath); err != nil {
		return err
	}
	if err := absolute("exit path", req.ExitPaths...); err != nil {
		return err
	}
	if err := absolute("oom exit path", req.OOMExitPaths...); err != nil {
		return err
	}
	for _, d := range req.LogDrivers {
		if d.Type == LogJournald {
			continue // takes no path
		}
		if err := absolute("log path", d.Path); err != nil {
			return err
		}
	}
	return nil
}

// errNotOurChild: the pidfile names a process the monitor cannot reap.
var errNotOurChild = errors.New("not a child of the monitor")

// checkOwnChild verifies that pid, read from a runtime's pidfile, is a
// child of this process: the container's init (or an exec'd process) is
// re-parented to the monitor, its subreaper, when the runtime exits. A
// pidfile naming any other process would make the monitor wait for an
// exit it can never reap and, at shutdown, kill a stranger. A process
// that is already gone passes: its exit, if it was ours, is buffered by the
// reaper.
func checkOwnChild(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil // gone (or never existed): nothing to adopt wrongly
	}
	// The comm field may hold spaces and parentheses: the fields after
	// the last ')' are "state ppid ...".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	// 0: the process has exited and is being released (the kernel reports
	// no parent once it is unhashed): gone, like a missing /proc entry.
	if ppid != 0 && ppid != os.Getpid() {
		return fmt.Errorf("pid %d (parent %d): %w", pid, ppid, errNotOurChild)
	}
	return nil
}
