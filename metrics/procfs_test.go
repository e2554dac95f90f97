package metrics

import (
	"os"
	"reflect"
	"testing"
)

// The process collector's /proc readings match the os package's, and
// reading them again allocates nothing but the paths' C strings.
func TestProcReader(t *testing.T) {
	var p procReader
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	n, ok := p.countFDs()
	// os.ReadDir's own descriptor was open then, countFDs' is not counted.
	if !ok || n < len(entries)-2 || n > len(entries)+1 {
		t.Errorf("countFDs = %d, %v; /proc/self/fd held %d entries", n, ok, len(entries))
	}
	rss, ok := p.readRSS()
	if !ok || rss < 1<<20 {
		t.Errorf("readRSS = %d, %v", rss, ok)
	}
	if a := testing.AllocsPerRun(10, func() {
		_, _ = p.countFDs()
		_, _ = p.readRSS()
	}); a > 2 {
		t.Errorf("reading /proc allocates %v times, want at most 2 (the paths for open)", a)
	}
}

// scanDir sees every entry but "." and "..", across several getdents
// calls when the buffer is small, and stops when told to.
func TestScanDir(t *testing.T) {
	dir := t.TempDir()
	want := map[string]bool{}
	for i := range 50 {
		name := "gomon-" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".prom"
		if err := os.WriteFile(dir+"/"+name, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	got := map[string]bool{}
	if !scanDir(int(f.Fd()), make([]byte, 256), func(name []byte) bool { got[string(name)] = true; return true }) {
		t.Fatal("scanDir failed")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("scanDir saw %v, want %v", got, want)
	}
	g, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	seen := 0
	scanDir(int(g.Fd()), make([]byte, 256), func([]byte) bool { seen++; return seen < 7 })
	if seen != 7 {
		t.Errorf("scanDir went on after fn returned false: %d calls", seen)
	}
}
