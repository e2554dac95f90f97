package ioloop

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// logFile is the file handling shared by CRILog and JSONLog: open with
// create+truncate, write whole record batches, and reopen (fsync the old
// file, open the path again with create+truncate). It is not safe for
// concurrent use.
type logFile struct {
	path string
	perm os.FileMode
	f    *os.File // nil once closed
	off  int64    // file offset: bytes of whole batches written since open
}

func openLogFile(path string, perm os.FileMode) (*logFile, error) {
	lf := &logFile{path: path, perm: perm}
	f, err := lf.open()
	if err != nil {
		return nil, err
	}
	lf.f = f
	return lf, nil
}

func (lf *logFile) open() (*os.File, error) {
	f, err := os.OpenFile(lf.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, lf.perm)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
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

// reopen fsyncs the current file and opens the path again with
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
	f, err := lf.open()
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
	if err := f.Close(); err != nil {
		return fmt.Errorf("close log file %s: %w", lf.path, err)
	}
	return nil
}
