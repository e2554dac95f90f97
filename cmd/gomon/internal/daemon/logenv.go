package daemon

import (
	"fmt"
	"strconv"
	"strings"
)

// logMaxLineEnv names the variable that sets monitor.Config.LogMaxLine:
// a size such as 2MiB, 64KiB or 16384 (bytes); unset, empty or 0 is off.
// gomon inherits it from CRI-O's environment.
const logMaxLineEnv = "GOMON_LOG_MAX_LINE"

// Bounds of GOMON_LOG_MAX_LINE. Below minLogMaxLine a line would be cut
// into more records than today's per-read pieces; above maxLogMaxLine the
// memory a container may hold (the limit per stream) grows out of
// proportion to what a log reader can use.
const (
	minLogMaxLine = 1 << 10
	maxLogMaxLine = 64 << 20
)

// logMaxLine reads GOMON_LOG_MAX_LINE through lookupEnv.
func logMaxLine(lookupEnv func(string) (string, bool)) (int, error) {
	v, _ := lookupEnv(logMaxLineEnv)
	v = strings.TrimSpace(v)
	if v == "" || v == "0" {
		return 0, nil
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", logMaxLineEnv, v, err)
	}
	if n < minLogMaxLine || n > maxLogMaxLine {
		return 0, fmt.Errorf("%s=%q: must be 0 (off) or between 1KiB and 64MiB", logMaxLineEnv, v)
	}
	return int(n), nil
}

// parseSize parses a byte count with an optional binary unit: B, KiB, MiB
// or GiB (no space before it).
func parseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			v, shift = s, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a size like 2MiB, 64KiB or 16384")
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("size too large")
	}
	return n << shift, nil
}
