package harness

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// criLine matches one CRI log record: <RFC3339Nano> <stream> <P|F> <content>.
var criLine = regexp.MustCompile(`^(\S+) (stdout|stderr) (P|F) (.*)$`)

// CRIRecord is one parsed CRI log line.
type CRIRecord struct {
	Time                 time.Time
	Stream, Tag, Content string
}

// ReadCRILog parses every line of a CRI log file and fails on a malformed
// or unterminated one. Lines end at '\n' only: a '\r' before it is content
// (terminal output), which bufio.ScanLines would drop.
func ReadCRILog(path string) ([]CRIRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	var out []CRIRecord
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			return out, fmt.Errorf("unterminated CRI log line %q", line)
		}
		m := criLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			return out, fmt.Errorf("malformed CRI log line %q", line)
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return out, fmt.Errorf("timestamp of line %q: %w", line, err)
		}
		out = append(out, CRIRecord{Time: ts, Stream: m[2], Tag: m[3], Content: m[4]})
	}
	return out, nil
}
