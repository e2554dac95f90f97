package fdstore

import (
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// poisonID is the request id whose message panics in the server (through
// testHookRequest).
const poisonID = 0x7e57

// A panic while serving one connection ends that connection only, as if
// the client had hung up: what it parked and the descriptors of the
// message in hand are closed; other connections are served; the panic is
// counted and logged with its stack. Without the recovery the panic ends
// the test binary (the daemon).
func TestPanicEndsOnlyThatConnection(t *testing.T) {
	testHookRequest = func(msg []byte) {
		if len(msg) == headerSize && binary.LittleEndian.Uint64(msg)>>32 == poisonID {
			panic("injected fd socket panic")
		}
	}
	t.Cleanup(func() { testHookRequest = nil })
	var logs monitortest.SyncBuffer
	s, err := Listen(filepath.Join(t.TempDir(), "conmon-fd.sock"), slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	before := contain.PanicsOf(contain.FDStore)

	bad, good := dial(t, s.Path()), dial(t, s.Path())
	p := newPipes(t, 2)
	if _, err := bad.send(p.readFDs()[0]); err != nil {
		t.Fatal(err)
	}
	poison := binary.LittleEndian.AppendUint64(nil, uint64(poisonID)<<32|1)
	if err := bad.sendRaw(poison, p.readFDs()[1]); err != nil {
		t.Fatal(err)
	}
	p.dropReadEnds()
	if reply, err := bad.read(); err == nil && len(reply) > 0 {
		t.Fatalf("poisoned request answered %x, want the connection closed", reply)
	}
	eventually(t, "the parked descriptor is closed", func() bool { return p.readerGone(0) })
	eventually(t, "the descriptor in hand is closed", func() bool { return p.readerGone(1) })

	q := newPipes(t, 1)
	slots, err := good.send(q.readFDs()...)
	if err != nil || len(slots) != 1 {
		t.Fatalf("other connection after the panic: slots %v, %v", slots, err)
	}
	if got := contain.PanicsOf(contain.FDStore) - before; got != 1 {
		t.Errorf("counted %d fd socket panics, want 1", got)
	}
	l := logs.String()
	for _, want := range []string{"injected fd socket panic", `"kind":"fdstore"`, "TestPanicEndsOnlyThatConnection"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}
}
