// Package atomicfile writes the files other programs read while gomon may
// be replacing them (exit files, the daemon's pidfile, the pause process's
// pidfile): a reader sees the old file or the whole new one, never a part.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WriteFile replaces path with data, mode perm whatever the umask: it
// writes a new file next to it (O_EXCL, so nothing existing is ever
// truncated in place), fsyncs it and renames it over path. On failure the
// temporary file is removed and path is left as it was.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteWith is WriteFile with the content written by write, which streams
// it into the temporary file (no copy of the whole content in memory).
func WriteWith(path string, perm os.FileMode, write func(io.Writer) error) (err error) {
	tmp := TempName(path)
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
	if err = write(f); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(perm); err != nil { // the umask may have taken bits
		return fmt.Errorf("set mode of %s: %w", tmp, err)
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

// TempName returns a new hidden temporary name in path's directory, for a
// file that will be renamed over path.
func TempName(path string) string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(b[:]))
}
