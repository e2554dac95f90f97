package monitor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// writeFileAtomic replaces path with data: it writes a new file next to it
// (O_EXCL, so nothing existing is ever truncated in place), fsyncs it and
// renames it over path (docs/architecture.md, "A container's exit code is
// never lost"). A reader sees either the old file or
// the complete new one, never a partial exit code.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp := filepath.Join(dir, "."+base+".tmp-"+randomSuffix())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, perm)
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}

// writeExitFile writes code as decimal ASCII without a newline, the format
// CRI-O and conmon-rs use.
func writeExitFile(path string, code int) error {
	return writeFileAtomic(path, []byte(strconv.Itoa(code)), 0o644)
}

// writeOOMFile creates path empty (truncating an existing file: its content
// does not matter, only its existence) and fsyncs it.
func writeOOMFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create oom file: %w", err)
	}
	errSync := f.Sync()
	errClose := f.Close()
	if err := errors.Join(errSync, errClose); err != nil {
		return fmt.Errorf("sync oom file %s: %w", path, err)
	}
	return nil
}

// randomSuffix returns 16 random hex digits for temporary names.
func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
