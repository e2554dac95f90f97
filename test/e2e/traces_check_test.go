package e2e

import (
	"encoding/json"
	"testing"
)

// trace builds a Jaeger answer from (spanID, parentID, service, name) rows.
func trace(t *testing.T, rows ...[4]string) jaegerTrace {
	t.Helper()
	type ref struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	}
	type sp struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []ref  `json:"references"`
	}
	raw := struct {
		TraceID   string                       `json:"traceID"`
		Spans     []sp                         `json:"spans"`
		Processes map[string]map[string]string `json:"processes"`
	}{TraceID: "t1", Processes: map[string]map[string]string{}}
	for _, r := range rows {
		s := sp{SpanID: r[0], OperationName: r[3], ProcessID: r[2]}
		if r[1] != "" {
			s.References = []ref{{RefType: "CHILD_OF", SpanID: r[1]}}
		}
		raw.Spans = append(raw.Spans, s)
		raw.Processes[r[2]] = map[string]string{"serviceName": r[2]}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var tr jaegerTrace
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestGomonSpanCheck checks the trace assertion itself on synthetic Jaeger answers, so a
// check that cannot fail is caught without CRI-O.
func TestGomonSpanCheck(t *testing.T) {
	good := [][4]string{
		{"a", "", serviceCrictl, "runtime.v1.RuntimeService/CreateContainer"},
		{"b", "a", serviceCRIO, "/runtime.v1.RuntimeService/CreateContainer"},
		{"c", "b", serviceCRIO, "conmonrs-client: CreateContainer"},
		{"d", "c", serviceGomon, "create_container"},
		{"e", "d", serviceGomon, "read_loop"},
		{"f", "d", serviceGomon, "wait_for_exit_code"},
		{"r", "d", serviceGomon, "runtime_create"},
		{"x", "c", serviceGomon, "exec_sync_container"},
		{"y", "x", serviceGomon, "runtime_exec"},
	}
	// labelled gives the container's spans its identity; decorated also gives
	// wait_for_exit_code its exit_code tag and create_container a log event, as real gomon
	// spans have them.
	labelled := func(tr jaegerTrace) jaegerTrace {
		for i := range tr.Spans {
			if tr.Spans[i].SpanID == "a" || tr.Spans[i].SpanID == "b" || tr.Spans[i].SpanID == "c" {
				continue // crictl's and CRI-O's
			}
			tr.Spans[i].Tags = append(tr.Spans[i].Tags,
				jaegerKV{Key: "container_id", Value: "ctr1"}, jaegerKV{Key: "container.id", Value: "ctr1"},
				jaegerKV{Key: "k8s.pod.name", Value: "gomon-netns"}, jaegerKV{Key: "k8s.namespace.name", Value: "gomon-e2e"},
				jaegerKV{Key: "k8s.pod.uid", Value: "gomon-netns-uid"}, jaegerKV{Key: "k8s.container.name", Value: "writer"})
		}
		return tr
	}
	decorated := func(tr jaegerTrace) jaegerTrace {
		tr = labelled(tr)
		for i := range tr.Spans {
			switch tr.Spans[i].SpanID {
			case "f":
				tr.Spans[i].Tags = append(tr.Spans[i].Tags, jaegerKV{Key: "exit_code", Value: 0})
			case "d":
				tr.Spans[i].Logs = append(tr.Spans[i].Logs, struct {
					Fields []jaegerKV `json:"fields"`
				}{Fields: []jaegerKV{{Key: "log.message", Value: "container created"}}})
			}
		}
		return tr
	}
	without := func(id string) [][4]string {
		var out [][4]string
		for _, r := range good {
			if r[0] != id {
				out = append(out, r)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		traces  []jaegerTrace
		creates int
		wantErr bool
	}{
		{name: "full chain", traces: []jaegerTrace{decorated(trace(t, good...))}, creates: 1},
		{name: "undecorated: no exit code, no log events", traces: []jaegerTrace{labelled(trace(t, good...))}, creates: 1, wantErr: true},
		{name: "no pod identity on the container's spans", creates: 1, wantErr: true, traces: []jaegerTrace{func() jaegerTrace {
			tr := decorated(trace(t, good...))
			for i := range tr.Spans {
				if tr.Spans[i].SpanID == "e" { // read_loop: container_id only
					tr.Spans[i].Tags = []jaegerKV{{Key: "container_id", Value: "ctr1"}}
				}
			}
			return tr
		}()}},
		{name: "no runtime_create", traces: []jaegerTrace{decorated(trace(t, without("r")...))}, creates: 1, wantErr: true},
		{name: "no runtime_exec", traces: []jaegerTrace{decorated(trace(t, without("y")...))}, creates: 1, wantErr: true},
		{name: "fewer chains than containers", traces: []jaegerTrace{decorated(trace(t, good...))}, creates: 2, wantErr: true},
		{name: "no traces", wantErr: true, creates: 1},
		{name: "gomon root span", creates: 1, wantErr: true, traces: []jaegerTrace{trace(t,
			[4]string{"d", "", serviceGomon, "create_container"},
			[4]string{"e", "d", serviceGomon, "read_loop"},
			[4]string{"f", "d", serviceGomon, "wait_for_exit_code"})}},
		{name: "no crictl above crio", creates: 1, wantErr: true, traces: []jaegerTrace{trace(t, good[1:]...)}},
		{name: "no read_loop", creates: 1, wantErr: true, traces: []jaegerTrace{trace(t, good[:4]...)}},
		{name: "parent not a conmonrs-client span", creates: 1, wantErr: true, traces: []jaegerTrace{trace(t,
			append(append([][4]string(nil), good...), [4]string{"g", "b", serviceGomon, "create_container"})...)}},
		{name: "parent in another service", creates: 1, wantErr: true, traces: []jaegerTrace{trace(t,
			append(append([][4]string(nil), good...), [4]string{"g", "a", serviceGomon, "create_container"})...)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := findGomonSpans(tc.traces)
			err := g.problem(tc.creates)
			if (err != nil) != tc.wantErr {
				t.Errorf("problem() = %v, want error %v (found: %s)", err, tc.wantErr, g)
			}
		})
	}
	g := findGomonSpans([]jaegerTrace{decorated(trace(t, good...))})
	writer := podIdentity{pod: "gomon-netns", namespace: "gomon-e2e", uid: "gomon-netns-uid", container: "writer"}
	if err := g.missingIdentities([]podIdentity{writer}); err != nil {
		t.Errorf("missingIdentities(present) = %v", err)
	}
	ticker := writer
	ticker.container = "ticker"
	if err := g.missingIdentities([]podIdentity{writer, ticker}); err == nil {
		t.Error("missingIdentities(absent ticker) = nil")
	}
	if n := countLinked([]jaegerTrace{trace(t, good...)}, serviceCrictl, serviceCRIO); n != 1 {
		t.Errorf("countLinked = %d, want 1", n)
	}
	if n := countLinked([]jaegerTrace{trace(t, good[1:]...)}, serviceCrictl, serviceCRIO); n != 0 {
		t.Errorf("countLinked without crictl = %d, want 0", n)
	}
}
