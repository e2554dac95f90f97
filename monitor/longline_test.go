package monitor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// TestLongLineMaxLine: a container writes one 1 MiB line (tr writes it
// in small pieces, so gomon reads it in many chunks). With LogMaxLine 2
// MiB its CRI log holds one F record; with 64 KiB, 15 P records and one F
// record of 64 KiB each; their contents joined are the line.
func TestLongLineMaxLine(t *testing.T) {
	const size = 1 << 20
	want := bytes.Repeat([]byte("a"), size)
	for _, tt := range []struct {
		maxLine int
		tags    string
	}{
		{2 << 20, "F"},
		{64 << 10, "PPPPPPPPPPPPPPPF"},
	} {
		t.Run(fmt.Sprintf("max=%d", tt.maxLine), func(t *testing.T) {
			runc := monitortest.Runc(t)
			m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger(), LogMaxLine: tt.maxLine})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := m.Shutdown(ctx); err != nil {
					t.Errorf("shutdown: %v", err)
				}
			})
			p := newPaths(t)
			script := fmt.Sprintf(`head -c %d /dev/zero | tr '\0' a; echo`, size)
			req := p.request("longline", monitortest.Bundle(t, "sh", "-c", script))
			if st := runToExit(t, m, req); st.Code != 0 {
				t.Fatalf("exit %+v", st)
			}
			raw, err := os.ReadFile(p.log)
			if err != nil {
				t.Fatal(err)
			}
			var tags, got []byte
			for _, rec := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n")) {
				f := bytes.SplitN(rec, []byte(" "), 4)
				if len(f) != 4 || string(f[1]) != "stdout" {
					t.Fatalf("bad record %.80q", rec)
				}
				tags = append(tags, f[2]...)
				got = append(got, f[3]...)
			}
			if string(tags) != tt.tags || !bytes.Equal(got, want) {
				t.Errorf("records %s holding %d bytes (the line: %v), want %s holding the line",
					tags, len(got), bytes.Equal(got, want), tt.tags)
			}
		})
	}
}
