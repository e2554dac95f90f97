package metrics

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// scanDir calls fn with the name of each entry of the directory open as
// fd, "." and ".." aside, until fn returns false. The entries are read
// with getdents(2) into buf and the names passed as slices of it, so
// nothing is allocated (os.File.Readdirnames makes a string per entry
// and takes an 8 KiB buffer from a pool). It reports whether the
// directory was read to its end or to where fn stopped.
func scanDir(fd int, buf []byte, fn func(name []byte) bool) bool {
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		if n <= 0 {
			return true
		}
		for d := buf[:n]; len(d) > 0; {
			// struct linux_dirent64: ino (8), off (8), reclen (2),
			// type (1), then the NUL-terminated name.
			if len(d) < 20 {
				return false
			}
			reclen := int(binary.NativeEndian.Uint16(d[16:18]))
			if reclen < 20 || reclen > len(d) {
				return false
			}
			name := d[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			d = d[reclen:]
			if string(name) == "." || string(name) == ".." {
				continue
			}
			if !fn(name) {
				return true
			}
		}
	}
}
