package procfs

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	cases := []struct {
		name string
		line string
		want Stat
	}{
		{
			name: "plain",
			line: "42 (conmon) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 1 0 1000 1000 100",
			want: Stat{PID: 42, Comm: "conmon", State: 'S', PPID: 1, CPU: 4 * time.Second},
		},
		{
			name: "comm with spaces and parens",
			line: "7 (a (b) c) Z 3 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1",
			want: Stat{PID: 7, Comm: "a (b) c", State: 'Z', PPID: 3, CPU: 30 * time.Millisecond},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.line))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Fatal("parseStat(garbage) succeeded")
	}
}

func TestReadSelf(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.PSS <= 0 || m.USS <= 0 || m.USS > m.RSS {
		t.Fatalf("implausible memory %+v", m)
	}
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != os.Getpid() || s.PPID != os.Getppid() {
		t.Fatalf("stat %+v", s)
	}
}

func TestCPUTimeCountsWork(t *testing.T) {
	before, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	_ = x
	after, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("CPU time did not grow: %v then %v", before, after)
	}
}
