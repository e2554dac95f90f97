// Command loggen is the log benchmark's writer. It runs inside the
// container (built static, hard-linked into the rootfs) and writes the
// first -bytes bytes of a loggen pattern to stdout, or to -o.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gomon-dev/gomon/bench/internal/loggen"
)

func main() {
	pattern := flag.String("pattern", loggen.Lines100.Name, "record pattern: lines100, longline or lines2")
	size := flag.Int64("bytes", 1<<20, "bytes to write")
	out := flag.String("o", "", "write to this file instead of stdout")
	flag.Parse()
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
