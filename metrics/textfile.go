package metrics

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/atomicfile"
)

// Textfile is an Exporter that writes each batch, in the Prometheus text
// format, to <Dir>/gomon-<ID()>.prom for node_exporter's textfile
// collector, replacing the file atomically (node_exporter never reads a
// partial one), and removes it at Shutdown, when the pod's monitor goes.
// ID is asked at every export (the pod's UID is known only once a
// container of the pod was created); when it changes, the old file is
// removed. Only the Reader's goroutine calls it.
//
// A daemon killed without its shutdown (the kubelet may SIGKILL the pod's
// processes, gomon included, when it removes the pod) leaves its file
// behind. So each export also removes the other gomon-*.prom files in Dir
// that nobody has replaced for StaleAfter: a live daemon rewrites its file
// every interval, and every daemon on the node gets the same interval
// from CRI-O's environment. A directory no gomon writes to any more keeps
// its last stale file; node_exporter's node_textfile_mtime_seconds shows
// its age.
type Textfile struct {
	Dir string
	ID  func() string
	// StaleAfter is the age past which another daemon's file is removed;
	// 0 never removes one.
	StaleAfter time.Duration

	last   string        // path written last; "" when none
	bw     *bufio.Writer // WriteText's buffer, reused by every export
	dirBuf []byte        // sweep's directory buffer, reused likewise
}

var _ Exporter = (*Textfile)(nil)

// Export implements Exporter.
func (t *Textfile) Export(_ context.Context, b *Batch) error {
	path := filepath.Join(t.Dir, "gomon-"+fileSafe(t.ID())+".prom")
	// Streamed into the temporary file through one small buffer, kept
	// for the next export: the whole text is never in memory.
	if err := atomicfile.WriteWith(path, 0o644, func(w io.Writer) error {
		if t.bw == nil {
			t.bw = bufio.NewWriter(w)
		} else {
			t.bw.Reset(w)
		}
		writeText(t.bw, b.Families())
		err := t.bw.Flush()
		t.bw.Reset(io.Discard) // not the file, which is closed next
		return err
	}); err != nil {
		return fmt.Errorf("write metrics textfile: %w", err)
	}
	if t.last != "" && t.last != path {
		_ = removeIfExists(t.last) // a stale name; the new file is written
	}
	t.last = path
	if t.StaleAfter > 0 {
		t.sweep(path)
	}
	return nil
}

// maxSweep bounds the directory entries one sweep looks at.
const maxSweep = 4096

// sweep removes the gomon-*.prom files other than ours not modified for
// StaleAfter: their daemons are gone (see Textfile). Best effort. The
// directory is read into one reused buffer, and only the names that match
// are turned into strings.
func (t *Textfile) sweep(ours string) {
	fd, err := unix.Open(t.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer func() { _ = unix.Close(fd) }()
	if t.dirBuf == nil {
		t.dirBuf = make([]byte, 4096)
	}
	seen := 0 // a partial list is swept as far as it goes
	scanDir(fd, t.dirBuf, func(name []byte) bool {
		seen++
		if !bytes.HasPrefix(name, []byte("gomon-")) || !bytes.HasSuffix(name, []byte(".prom")) {
			return seen < maxSweep
		}
		if path := filepath.Join(t.Dir, string(name)); path != ours {
			if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() && time.Since(st.ModTime()) > t.StaleAfter {
				_ = os.Remove(path) // another daemon may have removed it first
			}
		}
		return seen < maxSweep
	})
}

// Shutdown removes the file.
func (t *Textfile) Shutdown(context.Context) error {
	if t.last == "" {
		return nil
	}
	err := removeIfExists(t.last)
	t.last = ""
	return err
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove metrics textfile: %w", err)
	}
	return nil
}

// fileSafe keeps [A-Za-z0-9_.-] of s (a pod UID or a hash is unchanged)
// and replaces the rest with '_'; an empty s is "unknown".
func fileSafe(s string) string {
	if s == "" {
		return "unknown"
	}
	b := []byte(s)
	for i, c := range b {
		ok := c == '-' || c == '_' || c == '.' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !ok {
			b[i] = '_'
		}
	}
	if b[0] == '.' {
		b[0] = '_' // never a hidden file
	}
	return string(b)
}
