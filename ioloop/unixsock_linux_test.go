package ioloop

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestListenAndDialLongPaths(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket"} {
		t.Run(network, func(t *testing.T) {
			dir := t.TempDir()
			for len(dir) < 130 {
				dir = filepath.Join(dir, strings.Repeat("d", 30))
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "s.sock")
			l, err := ListenUnix(network, path, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			fi, err := os.Stat(path)
			if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				t.Fatalf("socket %v, %v", fi, err)
			}
			done := make(chan error, 1)
			go func() {
				c, err := l.AcceptUnix()
				if err == nil {
					_, err = c.Write([]byte("hi"))
					_ = c.Close()
				}
				done <- err
			}()
			c, err := DialUnix(network, path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			buf := make([]byte, 8)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "hi" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			_ = l.Close()
			if _, err := os.Stat(path); err != nil {
				t.Errorf("Close unlinked the path: %v", err)
			}
		})
	}
}

// A client that waits for the socket file and dials at once (as a caller
// of `gomon --skip-fork` does) must never be refused: the path appears
// only once the socket listens. A CI run of the launcher's test once
// dialled between bind and listen.
func TestListenUnixPathAppearsListening(t *testing.T) {
	dir := t.TempDir()
	for i := range 300 {
		path := filepath.Join(dir, "s"+strconv.Itoa(i))
		dialled := make(chan error, 1)
		go func() {
			for {
				if _, err := os.Lstat(path); err == nil {
					c, err := DialUnix("unix", path)
					if err == nil {
						_ = c.Close()
					}
					dialled <- err
					return
				}
				runtime.Gosched()
			}
		}()
		l, err := ListenUnix("unix", path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		err = <-dialled
		_ = l.Close()
		if err != nil {
			t.Fatalf("round %d: a dial as the path appeared: %v", i, err)
		}
	}
	// Nothing but the sockets themselves is left in the directory.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left", e.Name())
		}
	}
	if len(entries) != 300 {
		t.Errorf("%d files, want 300", len(entries))
	}
}

// ListenUnix never replaces what is at the path, as bind never did: a
// file or a socket there is EADDRINUSE, and no temporary file is left.
func TestListenUnixRefusesExistingPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(dir, "live")
	l, err := ListenUnix("unixpacket", live, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	for _, p := range []string{file, live} {
		if _, err := ListenUnix("unix", p, 0o600); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("listen on existing %s = %v, want EADDRINUSE", filepath.Base(p), err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the file became %q, %v", b, err)
	}
	c, err := DialUnix("unixpacket", live)
	if err != nil {
		t.Errorf("the live socket no longer answers: %v", err)
	} else {
		_ = c.Close()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only file and live", names)
	}
}

// Without renameat2 (an old kernel, or a filesystem without
// RENAME_NOREPLACE) the socket is placed by link and unlink, with the
// same answers: it listens at its path, nothing else is left, and an
// existing path is EADDRINUSE.
func TestListenUnixWithoutRenameat2(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSYS, syscall.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			defer func(f func(int, string, int, string, uint) error) { renameat2 = f }(renameat2)
			calls := 0
			renameat2 = func(int, string, int, string, uint) error { calls++; return errno }
			dir := t.TempDir()
			path := filepath.Join(dir, "s.sock")
			l, err := ListenUnix("unix", path, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			c, err := DialUnix("unix", path)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			_ = c.Close()
			if _, err := ListenUnix("unix", path, 0o600); !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("second listen = %v, want EADDRINUSE", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 || calls != 2 {
				t.Errorf("%d entries in the directory after %d renameat2 calls, want 1 after 2", len(entries), calls)
			}
		})
	}
}
