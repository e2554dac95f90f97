package ioloop

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// logFile is the file handling shared by CRILog and JSONLog: open with
// create+truncate, write whole record batches, truncate in place at the
// size limit, and reopen (fsync the old file, open the name again with
// create+truncate). It is not safe for concurrent use.
//
// The log directory is usually writable by the container (kubelet's pod
// log directory can be mounted into it), while gomon runs as root. So the
// file is only ever opened by its last name component relative to a
// descriptor of the directory taken once at open (a directory swapped for a
// symlink later cannot redirect a reopen), never through a symlink at that
// name (O_NOFOLLOW), and only if it turns out to be a regular file with a
// single link: a symlink, FIFO, device, socket, directory or hard link
// planted at the name is refused, never truncated or written. Refusing
// rather than replacing means gomon never deletes anything in a directory
// the container controls, and on a failed reopen the output keeps going to
// the current file (kubelet then renames its rotated file back), so
// nothing is lost.
type logFile struct {
	dir  *os.File // the log's directory (O_PATH), resolved once at open
	name string   // last component of path, opened relative to dir
	path string   // for messages
	perm os.FileMode
	f    *os.File // nil once closed
	off  int64    // file offset: bytes of whole batches written since open
}

func openLogFile(path string, perm os.FileMode) (*logFile, error) {
	return openLogFileMode(path, perm, true)
}

// openLogFileMode is openLogFile; with truncate false the file is kept and
// written at its end (a new gomon process taking over a container after an
// upgrade in place, see docs/upgrade.md), and off starts at its size.
func openLogFileMode(path string, perm os.FileMode, truncate bool) (*logFile, error) {
	dir, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("open log file %q: %w: no file name", path, ErrUnsafeLogPath)
	}
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open log directory %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	lf := &logFile{dir: os.NewFile(uintptr(dfd), dir), name: name, path: path, perm: perm}
	f, err := lf.open(truncate)
	if err != nil {
		_ = lf.dir.Close()
		return nil, err
	}
	lf.f = f
	if !truncate {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			_ = f.Close()
			_ = lf.dir.Close()
			return nil, fmt.Errorf("seek to the end of log file %s: %w", path, err)
		}
		lf.off = end
	}
	return lf, nil
}

// open opens (creating if needed) the regular file lf.name in lf.dir and,
// with truncate, truncates it. It opens without following a symlink and
// without blocking (a FIFO would otherwise wait for a reader), checks the
// opened file, and truncates only then, so nothing but a plain log file is
// ever cut.
func (lf *logFile) open(truncate bool) (*os.File, error) {
	var fd int
	err := lf.dirControl(func(dfd int) error {
		var oerr error
		for {
			fd, oerr = unix.Openat(dfd, lf.name,
				unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(lf.perm.Perm()))
			if !errors.Is(oerr, unix.EINTR) {
				return oerr
			}
		}
	})
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("open log file %s: %w: it is a symbolic link", lf.path, ErrUnsafeLogPath)
	}
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", &os.PathError{Op: "open", Path: lf.path, Err: err})
	}
	if err := checkLogFD(fd); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("open log file %s: %w", lf.path, err)
	}
	if truncate {
		if err := unix.Ftruncate(fd, 0); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("truncate log file %s: %w", lf.path, err)
		}
	}
	// Writes to a regular file never return EAGAIN; clearing the flag
	// keeps os.File from treating the file as pollable.
	if err := unix.SetNonblock(fd, false); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("set log file %s blocking: %w", lf.path, err)
	}
	return os.NewFile(uintptr(fd), lf.path), nil
}

// checkLogFD accepts only a regular file with one link: a second name
// (a hard link planted in the log directory) could be any other file of
// the same filesystem.
func checkLogFD(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%w: not a regular file (mode %#o)", ErrUnsafeLogPath, st.Mode&unix.S_IFMT)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("%w: the file has %d hard links", ErrUnsafeLogPath, st.Nlink)
	}
	return nil
}

// dirControl runs fn with the directory's descriptor.
func (lf *logFile) dirControl(fn func(dfd int) error) error {
	rc, err := lf.dir.SyscallConn()
	if err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return fmt.Errorf("log directory: %w", err)
	}
	return ferr
}

// write writes one batch of whole records. If the write fails after writing
// part of the batch (ENOSPC, EDQUOT…), the torn tail is cut off again so the
// file stays a sequence of whole records that a parser can read.
func (lf *logFile) write(b []byte) error {
	if lf.f == nil {
		return ErrClosed
	}
	n, err := lf.f.Write(b)
	if err == nil {
		lf.off += int64(n)
		return nil
	}
	err = fmt.Errorf("write log file %s: %w", lf.path, err)
	if n > 0 {
		if terr := lf.f.Truncate(lf.off); terr != nil {
			return errors.Join(err, fmt.Errorf("cut torn record: %w", terr))
		}
		if _, serr := lf.f.Seek(lf.off, io.SeekStart); serr != nil {
			return errors.Join(err, fmt.Errorf("rewind after torn record: %w", serr))
		}
	}
	return err
}

// truncate empties the open file in place (the size limit). It acts on
// the open descriptor, never on the name: after kubelet renamed the file
// and before it asks for a reopen, the name is free, and opening it here
// would start a file that the reopen then truncates again, losing the
// records in between.
func (lf *logFile) truncate() error {
	if lf.f == nil {
		return ErrClosed
	}
	if err := lf.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate log file %s: %w", lf.path, err)
	}
	if _, err := lf.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind log file %s: %w", lf.path, err)
	}
	lf.off = 0
	return nil
}

// reopen fsyncs the current file and opens the name again with
// create+truncate. After a rename (log rotation) this starts a new empty
// file and leaves the renamed one complete; without a rename it truncates in
// place. On failure the old file stays in use, so no later output is lost.
func (lf *logFile) reopen() error {
	if lf.f == nil {
		return ErrClosed
	}
	if err := lf.f.Sync(); err != nil {
		return fmt.Errorf("sync log file %s: %w", lf.path, err)
	}
	f, err := lf.open(true)
	if err != nil {
		return err
	}
	old := lf.f
	lf.f, lf.off = f, 0
	if err := old.Close(); err != nil {
		return fmt.Errorf("close old log file %s: %w", lf.path, err)
	}
	return nil
}

func (lf *logFile) close() error {
	if lf.f == nil {
		return nil
	}
	f := lf.f
	lf.f = nil
	errDir := lf.dir.Close()
	if err := errors.Join(f.Close(), errDir); err != nil {
		return fmt.Errorf("close log file %s: %w", lf.path, err)
	}
	return nil
}
