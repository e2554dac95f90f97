package reliability

// gomon's own log and journald: a journald that stops reading must not
// hold up the pod.

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// journalSocketEnv points the daemon's own journald logging (only that:
// containers' journald logs are not involved) at a socket of the test's.
const journalSocketEnv = "_GOMON_TEST_JOURNAL_SOCKET"

// journalStall is how long the test keeps its journald stalled after the
// containers ran: longer than gomon's 2 s journald send deadline, so gomon
// has given up on some records by then.
const journalStall = 5 * time.Second

// readJournal reads datagrams until none came for quiet and returns the
// MESSAGE fields and the sum of the GOMON_DROPPED_RECORDS fields.
func readJournal(t *testing.T, conn *net.UnixConn, quiet time.Duration) (msgs []string, dropped int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(quiet))
		n, err := conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return msgs, dropped
		}
		if err != nil {
			t.Fatalf("read journal socket: %v", err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if v, ok := strings.CutPrefix(line, "MESSAGE="); ok {
				msgs = append(msgs, v)
			}
			if v, ok := strings.CutPrefix(line, "GOMON_DROPPED_RECORDS="); ok {
				d, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("GOMON_DROPPED_RECORDS=%q: %v", v, err)
				}
				dropped += d
			}
		}
	}
}

// TestStalledJournald: with --log-driver systemd (what CRI-O passes) and a
// journald that takes a few records and then stops reading, start-up,
// creates, starts and exit files go on as usual (each bounded by the hang
// guard; a logger waiting on journald would wait for ever), and once
// journald reads again gomon reports how many of its records it dropped.
func TestStalledJournald(t *testing.T) {
	requireRoot(t)
	sock := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetReadBuffer(1); err != nil { // as small as the kernel allows
		t.Fatal(err)
	}
	t.Setenv(journalSocketEnv, sock) // inherited by the launcher and the daemon

	cfg := serverConfig(t, runcPath(t))
	cfg.LogDriver = client.LogDriverSystemd
	s := startGomon(t, cfg)
	for i := range 3 {
		c := running(t, s, nil, "sh", "-c", "echo hello; exit "+strconv.Itoa(3+i))
		if code := c.exitCode(t); code != 3+i {
			t.Fatalf("container %d: exit code %d, want %d", i, code, 3+i)
		}
	}
	s.alive(t)
	time.Sleep(journalStall)

	// journald reads again; the next record gomon logs is followed by the
	// report of what it dropped.
	msgs, dropped := readJournal(t, conn, 500*time.Millisecond)
	c := running(t, s, nil, "sh", "-c", "exit 0")
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d after the stall", code)
	}
	more, moreDropped := readJournal(t, conn, time.Second)
	msgs, dropped = append(msgs, more...), dropped+moreDropped
	reports := 0
	for _, m := range msgs {
		if strings.Contains(m, "records dropped") {
			reports++
		}
	}
	if reports == 0 || dropped == 0 {
		t.Fatalf("no report of dropped records in %d journal messages after the stall", len(msgs))
	}
	t.Logf("journald stalled: %d of gomon's records delivered, %d dropped and reported (%d reports)",
		len(msgs)-reports, dropped, reports)
}
