package ioloop

import (
	"bytes"
	"strconv"
)

// Stream names the container output a chunk came from. Terminal (pty)
// output is always Stdout, as in conmon-rs.
type Stream uint8

const (
	// Stdout is the container's standard output, or its terminal.
	Stdout Stream = iota + 1
	// Stderr is the container's standard error.
	Stderr
)

// String returns "stdout" or "stderr", the spelling used in CRI and JSON
// logs, or "Stream(N)" for an invalid value.
func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	default:
		return "Stream(" + strconv.Itoa(int(s)) + ")"
	}
}

// valid reports whether s is Stdout or Stderr.
func (s Stream) valid() bool { return s == Stdout || s == Stderr }

// nextLine cuts the first record's content off chunk, conmon-rs style: up to
// and including the first '\n' (partial=false), or, when there is none, the
// whole rest (partial=true). It never returns an empty line for a non-empty
// chunk; for an empty chunk it returns an empty line and rest.
func nextLine(chunk []byte) (line, rest []byte, partial bool) {
	if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
		return chunk[:i+1], chunk[i+1:], false
	}
	return chunk, nil, len(chunk) > 0
}
