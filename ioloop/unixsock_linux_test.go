package ioloop

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
