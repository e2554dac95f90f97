package handoff

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func valid() *State {
	return &State{
		From: "0.5.0", ListenerFD: 3, ControlFD: 4, PausedAt: 1,
		Containers: []Container{{
			ID: "a", PID: 100, BundlePath: "/b", StdoutFD: 5, StderrFD: 6, Stdin: true, StdinFD: 7,
			ExitFiles:  []Exit{{Path: "/exit/a", Tmp: "/exit/.a.tmp"}},
			LogDrivers: []Log{{Type: 0, Path: "/log/a"}, {Type: 2}},
			Attach:     []Attach{{Path: "/run/attach", StopAfterStdinEOF: true}},
			LeakFDs:    []FD{{FD: 8, Dev: 1, Ino: 2}},
		}, {
			ID: "t", PID: 101, BundlePath: "/t", StdoutFD: -1, StderrFD: -1, Terminal: true, ConsoleFD: 9,
			Stdin: true, StdinFD: -1,
		}},
		Exited: []Tombstone{{ID: "x", ExitCode: 137, Signal: 9, OOMKilled: true, OOMInit: 1, GlobalArgs: []string{"--debug"}}},
		Pause:  &Pause{PID: 99, PIDFile: "/run/conmonrs/p.pid", Namespaces: []Namespace{{Type: 2, Path: "/run/netns/p"}}},
		FDSocket: &FDSocket{FD: 12, Path: "/run/pod/conmon-fd.sock", Last: 4,
			Conns: []FDConn{{FD: 13, Slots: []FDSlot{{Slot: 3, FD: 14}, {Slot: 4, FD: 15}}}}},
	}
}

func TestRoundTrip(t *testing.T) {
	b, err := Encode(valid())
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing newer than schema 2 in it: stamped 2, so a binary of
	// schema 2 takes it over too.
	if s.Schema != 2 || len(s.Containers) != 2 || s.Containers[0].Attach[0].Path != "/run/attach" ||
		s.Containers[0].ExitFiles[0].Tmp != "/exit/.a.tmp" || s.Containers[0].LeakFDs[0] != (FD{FD: 8, Dev: 1, Ino: 2}) ||
		!s.Containers[1].Terminal || s.Containers[1].ConsoleFD != 9 ||
		s.Pause.PID != 99 || s.Pause.Namespaces[0].Path != "/run/netns/p" ||
		s.FDSocket.FD != 12 || s.FDSocket.Conns[0].Slots[1].FD != 15 || len(s.FDSocket.FDs()) != 4 {
		t.Fatalf("round trip: %+v", s)
	}
	if len(s.Exited) != 1 || s.Exited[0].ID != "x" || s.Exited[0].ExitCode != 137 || !s.Exited[0].OOMKilled ||
		s.Exited[0].GlobalArgs[0] != "--debug" {
		t.Fatalf("round trip of the exited: %+v", s.Exited)
	}
}

// An exited container's metric counters and identity are schema 3: a
// record holding them is stamped 3 and carries them whole.
func TestRoundTripExitedMetrics(t *testing.T) {
	st := valid()
	hm := &Metrics{Start: 5, Streams: []StreamMetrics{{Present: true, WrittenBytes: 7, DroppedBytes: []uint64{1, 2}}},
		OOM: []uint64{1, 0}, Exec: []Hist{{Counts: []uint64{0, 1}, Count: 1, Sum: 0.5}}}
	id := &Identity{PodName: "p", PodNamespace: "ns", PodUID: "u", ContainerName: "c"}
	st.Exited[0].Metrics, st.Exited[0].Identity = hm, id
	b, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Schema != 3 {
		t.Errorf("stamped schema %d, want 3", s.Schema)
	}
	x := s.Exited[0]
	if x.Identity == nil || *x.Identity != *id || x.Metrics == nil || x.Metrics.Start != 5 ||
		x.Metrics.Streams[0].WrittenBytes != 7 || x.Metrics.Streams[0].DroppedBytes[1] != 2 || x.Metrics.Exec[0].Sum != 0.5 {
		t.Fatalf("round trip of the exited: %+v %+v", x.Identity, x.Metrics)
	}
	// Stamped older than its fields: refused.
	old := strings.Replace(string(b), `"schema":3`, `"schema":2`, 1)
	if _, err := Decode([]byte(old)); err == nil || !strings.Contains(err.Error(), "fields of schema 3") {
		t.Errorf("a schema-2 record with schema-3 fields: %v", err)
	}
}

// A record of a schema this binary does not read, or of none, is refused
// as ErrSchema; so is a field this binary does not know (it would not be
// carried).
func TestDecodeRefuses(t *testing.T) {
	b, err := Encode(valid())
	if err != nil {
		t.Fatal(err)
	}
	rec := string(b)
	schema := fmt.Sprintf(`"schema":%d`, 2)
	for name, tc := range map[string]struct {
		rec    string
		schema bool
		says   string
	}{
		"newer schema":    {strings.Replace(rec, schema, fmt.Sprintf(`"schema":%d`, Schema+1), 1), true, fmt.Sprintf("schema %d", Schema+1)},
		"older schema":    {strings.Replace(rec, schema, fmt.Sprintf(`"schema":%d`, MinSchema-1), 1), true, fmt.Sprintf("schema %d", MinSchema-1)},
		"no schema":       {strings.Replace(rec, schema+",", ``, 1), true, "schema none"},
		"unknown field":   {strings.Replace(rec, `"from"`, `"terminals":[],"from"`, 1), false, "unknown field"},
		"fd twice":        {strings.Replace(rec, `"stderr_fd":6`, `"stderr_fd":5`, 1), false, "fd 5"},
		"stdin fd twice":  {strings.Replace(rec, `"stdin_fd":7`, `"stdin_fd":3`, 1), false, "fd 3"},
		"stdio fd":        {strings.Replace(rec, `"listener_fd":3`, `"listener_fd":1`, 1), false, "fd 1"},
		"zero pid":        {strings.Replace(rec, `"pid":100`, `"pid":0`, 1), false, "pid 0"},
		"console twice":   {strings.Replace(rec, `"console_fd":9`, `"console_fd":5`, 1), false, "fd 5"},
		"leak fd twice":   {strings.Replace(rec, `"fd":8`, `"fd":7`, 1), false, "fd 7"},
		"terminal pipe":   {strings.Replace(rec, `"stdout_fd":-1`, `"stdout_fd":20`, 1), false, "a terminal with pipes"},
		"console no tty":  {strings.Replace(rec, `"stdin_fd":7,`, `"stdin_fd":7,"console_fd":20,`, 1), false, "a console without a terminal"},
		"exited no id":    {strings.Replace(rec, `"id":"x"`, `"id":""`, 1), false, "empty ID"},
		"fd socket twice": {strings.Replace(rec, `"fd":12`, `"fd":5`, 1), false, "fd 5"},
		"stored fd twice": {strings.Replace(rec, `"slot":4,"fd":15`, `"slot":4,"fd":13`, 1), false, "fd 13"},
		"slot twice":      {strings.Replace(rec, `"slot":4,`, `"slot":3,`, 1), false, "slot 3 stored twice"},
		"namespace type":  {strings.Replace(rec, `"type":2,"path":"/run/netns/p"`, `"type":7,"path":"/run/netns/p"`, 1), false, "namespace file 7"},
		"not json":        {"{", false, "decode"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode([]byte(tc.rec))
			if err == nil {
				t.Fatalf("Decode accepted %s", tc.rec)
			}
			if errors.Is(err, ErrSchema) != tc.schema || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Decode: %v (ErrSchema %v), want one saying %q (ErrSchema %v)", err, errors.Is(err, ErrSchema), tc.says, tc.schema)
			}
		})
	}
}
