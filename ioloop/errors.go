package ioloop

import "errors"

// Error classes of package ioloop; test them with errors.Is.
var (
	// ErrNoJournal: the systemd journal's native socket does not exist, so
	// the journald log driver cannot be used on this host.
	ErrNoJournal = errors.New("systemd journal socket not available")
	// ErrClosed: the sink or Log was already closed.
	ErrClosed = errors.New("log closed")
	// ErrInvalidStream: a Stream value other than Stdout or Stderr.
	ErrInvalidStream = errors.New("invalid stream")
	// ErrMalformedLog: ParseCRILog met a record that is not in the CRI format
	// gomon writes.
	ErrMalformedLog = errors.New("malformed CRI log")
	// ErrUnsafeLogPath: a log file's path names a symbolic link, a FIFO, a
	// device or another file that is not a plain regular file of its own;
	// gomon refuses to open, truncate or write it.
	ErrUnsafeLogPath = errors.New("unsafe log path")
)
