package monitor

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWriteExitFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "exit")
	if err := os.WriteFile(p, []byte("old content, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Hard link: an in-place truncate would change what the link sees;
	// a rename leaves the old inode alone.
	if err := os.Link(p, p+".old"); err != nil {
		t.Fatal(err)
	}
	for _, code := range []int{0, 137, ExitUnknown} {
		if err := writeExitFile(p, code); err != nil {
			t.Fatal(err)
		}
		if got := readExit(t, p); got != itoaTest(code) {
			t.Errorf("exit file %q, want %q", got, itoaTest(code))
		}
	}
	if got := readExit(t, p+".old"); got != "old content, longer" {
		t.Errorf("old inode was modified in place: %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := writeExitFile(filepath.Join(dir, "missing", "exit"), 0); err == nil {
		t.Error("write into a missing dir succeeded")
	}
}

func itoaTest(i int) string {
	switch i {
	case ExitUnknown:
		return "-1"
	case 137:
		return "137"
	}
	return "0"
}

// An exit file written from its reservation has the code and leaves no
// temporary file; an unused reservation is removed by release; a path
// whose directory is missing gets no reservation and fails at write.
func TestExitFileReservation(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "missing", "c")}
	files := reserveExitFiles(paths, slog.New(slog.DiscardHandler))
	if files[0].tmp == "" || files[1].tmp == "" || files[2].tmp != "" {
		t.Fatalf("reservations %+v: want the first two only", files)
	}
	var st unix.Stat_t
	if err := unix.Stat(files[0].tmp, &st); err != nil || st.Blocks == 0 {
		t.Fatalf("reserved file: %+v, %v; want allocated blocks", st, err)
	}
	if err := files[0].write(-2147483648); err != nil {
		t.Fatal(err)
	}
	if got := readExit(t, paths[0]); got != "-2147483648" {
		t.Errorf("exit file %q", got)
	}
	files[1].release()
	if err := files[2].write(1); err == nil {
		t.Error("write into a missing dir succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "a" {
		t.Errorf("directory holds %v, want only the exit file", entries)
	}
}
