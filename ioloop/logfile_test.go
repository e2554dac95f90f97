package ioloop

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// victim is a file outside the log directory that a planted name points
// at; the tests check it is never truncated or written.
func victim(t *testing.T) (path string, content []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "victim")
	content = []byte("precious root-owned content\n")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, content
}

func checkVictim(t *testing.T, path string, content []byte) {
	t.Helper()
	if got := readFile(t, path); !bytes.Equal(got, content) {
		t.Errorf("file behind the log path was changed: %q, want %q", got, content)
	}
}

// openBounded runs open with a bound: a FIFO opened for writing without
// O_NONBLOCK could wait for a reader forever.
func openBounded(t *testing.T, open func() (Sink, error)) (Sink, error) {
	t.Helper()
	type res struct {
		s   Sink
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := open()
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("opening the log path blocked")
		return nil, nil
	}
}

// plant creates what kind names at path: a symlink to target, a FIFO, a
// character device (root only), a hard link to target, or a directory.
func plant(t *testing.T, kind, path, target string) {
	t.Helper()
	var err error
	switch kind {
	case "symlink":
		err = os.Symlink(target, path)
	case "dangling symlink":
		err = os.Symlink(target+".missing", path)
	case "fifo":
		err = unix.Mkfifo(path, 0o600)
	case "char device":
		if os.Geteuid() != 0 {
			t.Skip("creating a device node needs root")
		}
		err = unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) // /dev/null's numbers
	case "hard link":
		err = os.Link(target, path)
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	if err != nil {
		t.Fatalf("plant %s: %v", kind, err)
	}
}

var plantedKinds = []string{"symlink", "dangling symlink", "fifo", "char device", "hard link"}

// A log path that names anything but a plain regular file is refused at
// open, for both file drivers, and whatever it points at is untouched.
func TestLogOpenRefusesUnsafePaths(t *testing.T) {
	drivers := map[string]func(string) (Sink, error){
		"cri":  func(p string) (Sink, error) { return OpenCRILog(p, 0) },
		"json": func(p string) (Sink, error) { return OpenJSONLog(p, 0) },
	}
	for dname, open := range drivers {
		for _, kind := range plantedKinds {
			t.Run(dname+"/"+kind, func(t *testing.T) {
				vpath, vcontent := victim(t)
				path := filepath.Join(t.TempDir(), "ctr.log")
				plant(t, kind, path, vpath)
				s, err := openBounded(t, func() (Sink, error) { return open(path) })
				if err == nil {
					_ = s.WriteChunk(Stdout, []byte("container-controlled line\n"))
					_ = s.Close()
					t.Fatalf("opened a %s as the log", kind)
				}
				if !errors.Is(err, ErrUnsafeLogPath) {
					t.Errorf("error %v, want ErrUnsafeLogPath", err)
				}
				checkVictim(t, vpath, vcontent)
				if _, err := os.Stat(vpath + ".missing"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a dangling symlink's target was created: %v", err)
				}
			})
		}
	}
	t.Run("device path", func(t *testing.T) {
		if _, err := OpenCRILog(os.DevNull, 0); !errors.Is(err, ErrUnsafeLogPath) {
			t.Fatalf("OpenCRILog(%s) = %v, want ErrUnsafeLogPath", os.DevNull, err)
		}
	})
}

// Between kubelet's rename and ReopenContainerLog the container plants
// something at the log name: the reopen is refused, the planted target is
// untouched, and the output keeps going to the renamed file.
func TestLogReopenRefusesPlantedPath(t *testing.T) {
	for _, kind := range plantedKinds {
		t.Run(kind, func(t *testing.T) {
			vpath, vcontent := victim(t)
			c, path := openTestCRI(t, 0)
			if err := c.WriteChunk(Stdout, []byte("one\n")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			plant(t, kind, path, vpath)
			err := func() error {
				ch := make(chan error, 1)
				go func() { ch <- c.Reopen() }()
				select {
				case err := <-ch:
					return err
				case <-time.After(10 * time.Second):
					t.Fatal("Reopen blocked")
					return nil
				}
			}()
			if !errors.Is(err, ErrUnsafeLogPath) {
				t.Fatalf("Reopen onto a %s = %v, want ErrUnsafeLogPath", kind, err)
			}
			if err := c.WriteChunk(Stdout, []byte("two\n")); err != nil {
				t.Fatal(err)
			}
			checkVictim(t, vpath, vcontent)
			got, _, err := ParseCRILog(bytes.NewReader(readFile(t, path+".1")))
			if err != nil || string(got) != "one\ntwo\n" {
				t.Fatalf("renamed file %q, %v; want both lines", got, err)
			}
		})
	}
}

// The log's directory is resolved once, at open: a directory later swapped
// for a symlink elsewhere does not take the reopened file with it.
func TestLogReopenStaysInDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pod", "ctr")
	elsewhere := filepath.Join(root, "elsewhere")
	for _, d := range []string{dir, elsewhere} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	vpath := filepath.Join(elsewhere, "0.log")
	vcontent := []byte("not a log\n")
	if err := os.WriteFile(vpath, vcontent, 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "0.log")
	c, err := OpenCRILog(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.WriteChunk(Stdout, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	// Move the real directory away and put a symlink in its place.
	moved := filepath.Join(root, "pod", "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(moved, "0.log"), filepath.Join(moved, "0.log.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteChunk(Stdout, []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	checkVictim(t, vpath, vcontent)
	got, _, err := ParseCRILog(bytes.NewReader(readFile(t, filepath.Join(moved, "0.log"))))
	if err != nil || string(got) != "two\n" {
		t.Fatalf("reopened file in the original directory: %q, %v; want the line after the reopen", got, err)
	}
}

// Size truncation and rotation interleaved: kubelet renames the file, the
// next record crosses max size, then kubelet asks for a reopen. The
// truncation must empty the open (renamed) file, not start a new one at
// the name, which the reopen would truncate again: every record after the
// truncation survives, in the renamed file or the new one.
func TestLogMaxSizeTruncationDuringRotation(t *testing.T) {
	drivers := []struct {
		name  string
		open  func(string, uint64) (Sink, error)
		lines func([]byte) []string
	}{
		{"cri", func(p string, m uint64) (Sink, error) { return OpenCRILog(p, m) }, func(b []byte) []string {
			out, _, err := ParseCRILog(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			return strings.Fields(string(out))
		}},
		{"json", func(p string, m uint64) (Sink, error) { return OpenJSONLog(p, m) }, func(b []byte) []string {
			var out []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if l == "" {
					continue
				}
				_, msg, ok := strings.Cut(l, `"message":"`)
				if !ok {
					t.Fatalf("bad json record %q", l)
				}
				out = append(out, strings.TrimSuffix(msg, `"}`))
			}
			return out
		}},
	}
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ctr.log")
			// Room for about ten records of either driver.
			s, err := d.open(path, 600)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			line := func(i int) []byte { return fmt.Appendf(nil, "record-%03d\n", i) }
			i := 0
			size := func() int64 {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				return fi.Size()
			}
			// Fill until the next record would cross the limit.
			for {
				before := size()
				if err := s.WriteChunk(Stdout, line(i)); err != nil {
					t.Fatal(err)
				}
				i++
				if size() < before {
					t.Fatal("truncated while filling")
				}
				if size()+2*(size()/int64(i)) > 600 {
					break
				}
			}
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			// These cross the limit between the rename and the reopen.
			for range 4 {
				if err := s.WriteChunk(Stdout, line(i)); err != nil {
					t.Fatal(err)
				}
				i++
			}
			if _, err := os.Stat(path); err == nil {
				t.Errorf("the size truncation created a new file at the log name")
			}
			if err := s.Reopen(); err != nil {
				t.Fatal(err)
			}
			reopenAt := i
			for range 3 {
				if err := s.WriteChunk(Stdout, line(i)); err != nil {
					t.Fatal(err)
				}
				i++
			}
			rotated := d.lines(readFile(t, path+".1"))
			current := d.lines(readFile(t, path))
			all := append(append([]string{}, rotated...), current...)
			// Every record from the last truncation on must be there, in
			// order and once: the last ones are reopenAt.. in the new file.
			if len(current) != i-reopenAt {
				t.Errorf("new file has %v, want records %d..%d", current, reopenAt, i-1)
			}
			if len(rotated) == 0 {
				t.Fatalf("renamed file is empty: the records between the truncation and the reopen were lost")
			}
			n, err := strconv.Atoi(strings.TrimPrefix(all[0], "record-"))
			if err != nil {
				t.Fatalf("first record %q: %v", all[0], err)
			}
			for k, got := range all {
				if want := strings.TrimSpace(string(line(n + k))); got != want {
					t.Fatalf("record %d is %q, want %q (rotated %v, current %v)", k, got, want, rotated, current)
				}
			}
			if n+len(all) != i {
				t.Fatalf("records %d..%d kept, want up to %d", n, n+len(all)-1, i-1)
			}
			if n >= reopenAt {
				t.Fatalf("the truncation between rename and reopen lost records: kept from %d, reopen at %d", n, reopenAt)
			}
		})
	}
}
