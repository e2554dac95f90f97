// Command loggen is the log benchmark's writer. It runs inside the
// container (built static, hard-linked into the rootfs) and writes the
// first -bytes bytes of a loggen pattern to stdout, or to -o. With -every
// it is the noisy-neighbour benchmark's quiet container instead: -count
// lines "tick <n> <unix ns>", one write each, -every apart. With -relay it
// runs outside the container as the log benchmark's floor for a monitor:
// it copies its stdin (a pipe) to -o with plain read(2) and write(2).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/loggen"
)

func main() {
	pattern := flag.String("pattern", loggen.Lines100.Name, "record pattern: lines100, longline or lines2")
	size := flag.Int64("bytes", 1<<20, "bytes to write")
	out := flag.String("o", "", "write to this file instead of stdout")
	every := flag.Duration("every", 0, "write a timestamped tick line this often instead of a pattern")
	count := flag.Int("count", 100, "tick lines to write (with -every)")
	relayMode := flag.Bool("relay", false, "copy stdin to -o until EOF instead of writing a pattern")
	flag.Parse()
	if *relayMode {
		if err := relay(*out); err != nil {
			fmt.Fprintln(os.Stderr, "loggen:", err)
			os.Exit(1)
		}
		return
	}
	if *every > 0 {
		if err := ticks(*every, *count); err != nil {
			fmt.Fprintln(os.Stderr, "loggen:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*pattern, *size, *out); err != nil {
		fmt.Fprintln(os.Stderr, "loggen:", err)
		os.Exit(1)
	}
}

func run(name string, size int64, out string) error {
	p, err := loggen.ByName(name)
	if err != nil {
		return err
	}
	w := os.Stdout
	if out != "" {
		w, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("open output: %w", err)
		}
	}
	// 64 KiB writes: a pipe's default capacity, so the monitor's read size,
	// not ours, sets the pace.
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := io.Copy(bw, p.Reader(size)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("close output: %w", err)
	}
	return nil
}

// ticks writes count lines "tick <n> <unix ns>\n" to stdout, one write(2)
// each, every apart (on a ticker: a late write does not shift the rest).
func ticks(every time.Duration, count int) error {
	t := time.NewTicker(every)
	defer t.Stop()
	buf := make([]byte, 0, 64)
	for i := range count {
		<-t.C
		buf = fmt.Appendf(buf[:0], "tick %d %d\n", i, time.Now().UnixNano())
		if _, err := os.Stdout.Write(buf); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// relayBuf is the relay's read size: gomon's (ioloop's readBufSize), so
// both empty the pipe in the same pieces.
const relayBuf = 128 << 10

// relay copies stdin to the file out with blocking read(2) and write(2) of
// up to relayBuf bytes, as little as a monitor can do: no record format,
// no timestamps, no poller. The pipe gets the 1 MiB that gomon asks for
// its pipes (best effort, as there).
func relay(out string) error {
	if out == "" {
		return errors.New("-relay needs -o")
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("open output: %w", err)
	}
	_, _ = unix.FcntlInt(0, unix.F_SETPIPE_SZ, 1<<20) // best effort
	fd := int(f.Fd())
	buf := make([]byte, relayBuf)
	for {
		n, err := unix.Read(0, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			break
		}
		for p := buf[:n]; len(p) > 0; {
			m, err := unix.Write(fd, p)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("write: %w", err)
			}
			p = p[m:]
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close output: %w", err)
	}
	return nil
}
