package monitor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/atomicfile"
)

// writeExitFile writes code as decimal ASCII without a newline, the format
// CRI-O and conmon-rs use, atomically: a reader sees no exit file or the
// whole code (docs/architecture.md, "A container's exit code is never
// lost").
func writeExitFile(path string, code int) error {
	return atomicfile.WriteFile(path, []byte(strconv.Itoa(code)), 0o644)
}

// exitFileReserve is the space reserved for each exit file at create: more
// than the longest exit code ("-2147483648" is 11 bytes).
const exitFileReserve = 32

// Exit files whose write failed (ENOSPC on the exit directory's
// filesystem, for one) are retried in the background, with a delay from
// exitRetryFirst doubling up to exitRetryMax, for exitRetryFor in all,
// and once more when the monitor shuts down.
const (
	exitRetryFirst = 100 * time.Millisecond
	exitRetryMax   = 5 * time.Second
	exitRetryFor   = time.Hour
)

// exitFile is one exit path and the temporary file reserved for it.
type exitFile struct {
	path string
	tmp  string // reserved temporary file next to path; "" if none
}

// reserveExitFiles creates, next to each exit path, the temporary file
// its exit code will be written to, with exitFileReserve bytes allocated.
// Writing the code into allocated blocks needs no new space on a
// filesystem that overwrites in place (ext4, xfs, tmpfs), so a filesystem
// that fills up while the container runs cannot cost the exit code. A path
// whose reservation fails (the filesystem is full already, or does not
// exist yet) is written without one at exit, and retried if that fails.
func reserveExitFiles(paths []string, logger *slog.Logger) []exitFile {
	files := make([]exitFile, len(paths))
	for i, p := range paths {
		files[i].path = p
		tmp, err := reserveFile(p)
		if err != nil {
			logger.Warn("cannot reserve space for the exit file; it is written without a reservation",
				"path", p, "error", err)
			continue
		}
		files[i].tmp = tmp
	}
	return files
}

// reserveFile creates an exclusive temporary file next to path holding
// exitFileReserve allocated bytes and returns its name.
func reserveFile(path string) (string, error) {
	tmp := atomicfile.TempName(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return "", fmt.Errorf("create temporary file: %w", err)
	}
	err = f.Chmod(0o644) // the umask may have taken bits; as atomicfile.WriteFile does
	if err == nil {
		err = allocate(f)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp, cerr)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// allocate gives f exitFileReserve bytes of allocated blocks: fallocate
// keeping the size 0 (the code written at exit then sets it), or writing
// the bytes where the filesystem does not support that (the write at exit
// then cuts the file to the code).
func allocate(f *os.File) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, exitFileReserve)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		_, err = f.Write(make([]byte, exitFileReserve))
	}
	if err != nil {
		return fmt.Errorf("allocate %s: %w", f.Name(), err)
	}
	return nil
}

// release removes an unused reservation.
func (e *exitFile) release() {
	if e.tmp != "" {
		_ = os.Remove(e.tmp)
		e.tmp = ""
	}
}

// write writes code to the exit path: into the reserved file, then
// renamed over the path, or, without a usable reservation, as
// writeExitFile does.
func (e *exitFile) write(code int) error {
	if e.tmp == "" {
		return writeExitFile(e.path, code)
	}
	tmp := e.tmp
	e.tmp = ""
	rerr := fillReserved(tmp, e.path, []byte(strconv.Itoa(code)))
	if rerr == nil {
		return nil
	}
	_ = os.Remove(tmp)
	if err := writeExitFile(e.path, code); err != nil {
		return errors.Join(rerr, err)
	}
	return nil
}

// fillReserved writes data at the start of the reserved file tmp, cuts it
// to len(data) if it is longer (which frees space rather than taking any),
// fsyncs it and renames it to path.
func fillReserved(tmp, path string, data []byte) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open reserved file: %w", err)
	}
	_, werr := f.WriteAt(data, 0)
	if werr == nil {
		werr = f.Truncate(int64(len(data))) // cuts a reservation written as bytes; else a no-op
	}
	if werr == nil {
		werr = f.Sync()
	}
	if err := errors.Join(werr, f.Close()); err != nil {
		return fmt.Errorf("write reserved file %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	return nil
}

// retryExitFiles keeps trying to write code to paths in the background
// (see exitRetryFor). It is owned by the monitor: Shutdown makes it try
// one last time and waits for it.
func (m *Monitor) retryExitFiles(logger *slog.Logger, paths []string, code int) {
	m.retries.Add(1)
	go func() {
		defer m.retries.Done()
		delay := exitRetryFirst
		giveUp := time.Now().Add(exitRetryFor)
		for attempt := 1; ; attempt++ {
			last := false
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-m.stopRetries:
				t.Stop()
				last = true
			}
			last = last || time.Now().After(giveUp)
			var left []string
			for _, p := range paths {
				if err := writeExitFile(p, code); err != nil {
					if last {
						logger.Error("exit code lost: exit file could not be written", "path", p,
							"exit_code", code, "attempts", attempt, "error", err)
					}
					left = append(left, p)
					continue
				}
				logger.Info("exit file written after retrying", "path", p, "exit_code", code, "attempts", attempt)
			}
			paths = left
			if len(paths) == 0 || last {
				return
			}
			delay = min(2*delay, exitRetryMax)
		}
	}()
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
