package oom

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseCounters(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want counters
	}{
		{
			name: "v1 memory.oom_control",
			in:   "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
			want: counters{oomKill: count{n: 7, ok: true}},
		},
		{
			name: "v2 memory.events",
			in:   "low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n",
			want: counters{oomKill: count{n: 1, ok: true}, oom: count{n: 2, ok: true}},
		},
		{
			name: "old kernel without oom_kill",
			in:   "oom_kill_disable 0\nunder_oom 0\n",
			want: counters{},
		},
		{
			name: "garbage value skipped",
			in:   "oom_kill x\noom 3\n",
			want: counters{oom: count{n: 3, ok: true}},
		},
		{
			name: "no final newline, extra blanks",
			in:   "oom  4\r\n oom_kill 5",
			want: counters{oomKill: count{n: 5, ok: true}, oom: count{n: 4, ok: true}},
		},
		{
			name: "empty",
			in:   "",
			want: counters{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseCounters([]byte(tt.in)); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// openCounterFile opens a regular file holding content as a counterFile.
func openCounterFile(t testing.TB, content string) counterFile {
	t.Helper()
	name := filepath.Join(t.TempDir(), "memory.events")
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return counterFile{f: f}
}

// TestCounterReadAllocs pins that reading a counter, which the watcher
// does on every notification and at Stop, leaves no garbage: the read
// buffer comes from a pool (the race detector's pool drops some, which
// AllocsPerRun's whole-number average hides) and parsing needs no map.
func TestCounterReadAllocs(t *testing.T) {
	c := openCounterFile(t, "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\noom_group_kill 0\n")
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := c.readOOMKill(); err != nil || n != 1 {
			t.Fatalf("readOOMKill = %d, %v; want 1", n, err)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per counter read, want 0", allocs)
	}
}

func BenchmarkCounterRead(b *testing.B) {
	c := openCounterFile(b, "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\noom_group_kill 0\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.readOOMKill(); err != nil {
			b.Fatal(err)
		}
	}
}
