package e2e

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// kspan is one synthetic span: ID, parent ID, service, name, tags.
type kspan struct {
	id, parent, service, name string
	tags                      map[string]any
}

// ktrace builds a Jaeger answer from synthetic spans, each starting 1 ms after the previous
// and lasting 2 ms.
func ktrace(t *testing.T, id string, rows ...kspan) jaegerTrace {
	t.Helper()
	type kv struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	}
	type ref struct {
		RefType string `json:"refType"`
		SpanID  string `json:"spanID"`
	}
	type sp struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		StartTime     int64  `json:"startTime"`
		Duration      int64  `json:"duration"`
		References    []ref  `json:"references"`
		Tags          []kv   `json:"tags"`
	}
	raw := struct {
		TraceID   string                       `json:"traceID"`
		Spans     []sp                         `json:"spans"`
		Processes map[string]map[string]string `json:"processes"`
	}{TraceID: id, Processes: map[string]map[string]string{}}
	for i, r := range rows {
		s := sp{SpanID: r.id, OperationName: r.name, ProcessID: r.service, StartTime: 1_000_000 + int64(i)*1000, Duration: 2000}
		if r.parent != "" {
			s.References = []ref{{RefType: "CHILD_OF", SpanID: r.parent}}
		}
		for k, v := range r.tags {
			s.Tags = append(s.Tags, kv{k, v})
		}
		raw.Spans = append(raw.Spans, s)
		raw.Processes[r.service] = map[string]string{"serviceName": r.service}
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

// kubeletRun is a synthetic kubelet syncPod trace creating container ctr, which exits with code.
func kubeletRun(t *testing.T, traceID, ctr string, code int) jaegerTrace {
	return ktrace(t, traceID,
		kspan{"k1", "", serviceKubelet, "syncPod", nil},
		kspan{"k2", "k1", serviceKubelet, "runtime.v1.RuntimeService/CreateContainer", nil},
		kspan{"c1", "k2", serviceCRIO, "/runtime.v1.RuntimeService/CreateContainer", nil},
		kspan{"c2", "c1", serviceCRIO, "conmonrs-client: CreateContainer", nil},
		kspan{"g1", "c2", serviceGomon, "create_container", map[string]any{"container_id": ctr}},
		kspan{"g2", "g1", serviceGomon, "runtime_create", map[string]any{"container_id": ctr}},
		kspan{"g3", "g1", serviceGomon, "read_loop", map[string]any{"container_id": ctr, "stream": "stdout"}},
		kspan{"g4", "g1", serviceGomon, "wait_for_exit_code", map[string]any{"container_id": ctr, "exit_code": code}},
	)
}

// probe is a synthetic liveness-probe ExecSync trace in container ctr.
func probe(t *testing.T, traceID, ctr string) jaegerTrace {
	return ktrace(t, traceID,
		kspan{"k1", "", serviceKubelet, "runtime.v1.RuntimeService/ExecSync", nil},
		kspan{"c1", "k1", serviceCRIO, "/runtime.v1.RuntimeService/ExecSync", nil},
		kspan{"c2", "c1", serviceCRIO, "conmonrs-client: ExecSyncContainer", nil},
		kspan{"g1", "c2", serviceGomon, "exec_sync_container", map[string]any{"container_id": ctr, "exit_code": 0}},
		kspan{"g2", "g1", serviceGomon, "runtime_exec", nil},
	)
}

// TestKubeletSpanCheck checks the kubelet e2e's trace assertion on synthetic Jaeger answers:
// complete traces pass, and each missing piece (the last run's spans lost with its gomon, a
// wrong exit code, a chain without the kubelet, too few probes) is reported.
func TestKubeletSpanCheck(t *testing.T) {
	want := kubeletWant{exiterRuns: []string{"run1", "run2"}, lastExiter: "run2", sleeper: "sleep"}
	complete := []jaegerTrace{
		kubeletRun(t, "t1", "run1", 3), kubeletRun(t, "t2", "run2", 3),
		probe(t, "p1", "sleep"), probe(t, "p2", "sleep"),
	}
	// The last run's read_loop and wait_for_exit_code never exported: only its creation.
	lastLost := kubeletRun(t, "t2", "run2", 3)
	lastLost.Spans = lastLost.Spans[:6]
	// crio called directly, no kubelet above it.
	noKubelet := ktrace(t, "t3",
		kspan{"c1", "", serviceCRIO, "/runtime.v1.RuntimeService/CreateContainer", nil},
		kspan{"g1", "c1", serviceGomon, "create_container", map[string]any{"container_id": "run1"}},
		kspan{"g2", "g1", serviceGomon, "runtime_create", nil},
		kspan{"g3", "g1", serviceGomon, "read_loop", map[string]any{"container_id": "run1"}},
		kspan{"g4", "g1", serviceGomon, "wait_for_exit_code", map[string]any{"container_id": "run1", "exit_code": 3}},
	)
	noKubelet2 := ktrace(t, "t4",
		kspan{"c1", "", serviceCRIO, "/runtime.v1.RuntimeService/CreateContainer", nil},
		kspan{"g1", "c1", serviceGomon, "create_container", map[string]any{"container_id": "run2"}},
		kspan{"g2", "g1", serviceGomon, "runtime_create", nil},
		kspan{"g3", "g1", serviceGomon, "read_loop", map[string]any{"container_id": "run2"}},
		kspan{"g4", "g1", serviceGomon, "wait_for_exit_code", map[string]any{"container_id": "run2", "exit_code": 3}},
	)
	probeElsewhere := probe(t, "p3", "run1")
	// run1's creation in the kubelet's trace, its read loop and exit wait
	// in a trace of their own, and run2's under run1's create.
	createOnly := kubeletRun(t, "t1", "run1", 3)
	createOnly.Spans = createOnly.Spans[:6]
	detached := ktrace(t, "t5",
		kspan{"g3", "", serviceGomon, "read_loop", map[string]any{"container_id": "run1"}},
		kspan{"g4", "", serviceGomon, "wait_for_exit_code", map[string]any{"container_id": "run1", "exit_code": 3}},
	)
	crossed := ktrace(t, "t2",
		kspan{"k1", "", serviceKubelet, "syncPod", nil},
		kspan{"c1", "k1", serviceCRIO, "/runtime.v1.RuntimeService/CreateContainer", nil},
		kspan{"g1", "c1", serviceGomon, "create_container", map[string]any{"container_id": "run1"}},
		kspan{"g2", "g1", serviceGomon, "runtime_create", nil},
		kspan{"g3", "g1", serviceGomon, "read_loop", map[string]any{"container_id": "run2"}},
		kspan{"g4", "g1", serviceGomon, "wait_for_exit_code", map[string]any{"container_id": "run2", "exit_code": 3}},
	)
	tests := []struct {
		name    string
		traces  []jaegerTrace
		wantErr string
	}{
		{name: "complete", traces: complete},
		{name: "last run's spans lost", wantErr: "LAST run",
			traces: []jaegerTrace{complete[0], lastLost, complete[2], complete[3]}},
		{name: "exit code 0", wantErr: "no wait_for_exit_code span with exit_code 3",
			traces: []jaegerTrace{kubeletRun(t, "t1", "run1", 0), complete[1], complete[2], complete[3]}},
		{name: "no kubelet above crio", wantErr: "under a kubelet span",
			traces: []jaegerTrace{noKubelet, noKubelet2, complete[2], complete[3]}},
		{name: "read loop in a trace of its own", wantErr: "run1: no read_loop span in the kubelet's trace (2 of its spans are outside it)",
			traces: []jaegerTrace{createOnly, detached, complete[1], complete[2], complete[3]}},
		{name: "read loop under another container's create", wantErr: "no read_loop span in the kubelet's trace (2 of its spans are outside it)",
			traces: []jaegerTrace{complete[0], crossed, complete[2], complete[3]}},
		{name: "one probe", wantErr: "probe exec_sync_container",
			traces: []jaegerTrace{complete[0], complete[1], complete[2]}},
		{name: "probes in another container", wantErr: "probe exec_sync_container",
			traces: []jaegerTrace{complete[0], complete[1], complete[2], probeElsewhere}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := findKubeletSpans(tc.traces, want)
			got := strings.Join(f.problems(want), "; ")
			switch {
			case tc.wantErr == "" && got != "":
				t.Errorf("problems: %s (found %s)", got, f)
			case tc.wantErr != "" && !strings.Contains(got, tc.wantErr):
				t.Errorf("problems %q do not mention %q (found %s)", got, tc.wantErr, f)
			}
		})
	}
	if tr, ok := pictureTrace(complete, want); !ok || tr.TraceID != "t1" && tr.TraceID != "t2" {
		t.Errorf("pictureTrace = %s, %v; want a kubelet run trace", tr.TraceID, ok)
	}
	if _, ok := pictureTrace([]jaegerTrace{noKubelet, complete[2]}, want); ok {
		t.Errorf("pictureTrace picked a trace without the kubelet")
	}
}

// TestTraceSVG checks the waterfall is well-formed XML with one bar per span, in depth-first
// order, and escapes names.
func TestTraceSVG(t *testing.T) {
	tr := kubeletRun(t, "t1", "run1", 3)
	tr.Spans[0].OperationName = "syncPod <&>"
	svg := traceSVG(tr, "caption & more")
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	bars, texts := 0, []string{}
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("svg is not well-formed XML: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if e.Name.Local == "rect" {
				for _, a := range e.Attr {
					if a.Name.Local == "rx" {
						bars++
					}
				}
			}
			inText = inText || e.Name.Local == "text"
		case xml.EndElement:
			if e.Name.Local == "text" {
				inText = false
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(e))
			}
		}
	}
	if bars != len(tr.Spans) {
		t.Errorf("%d bars, want one per span (%d)", bars, len(tr.Spans))
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"syncPod <&>", "caption & more", "wait_for_exit_code exit_code=3", "read_loop stdout"} {
		if !strings.Contains(all, want) {
			t.Errorf("svg text lacks %q: %s", want, all)
		}
	}
	// Depth-first: the kubelet's span rows come before crio's, crio's before gomon's.
	if i, j := strings.Index(all, "syncPod"), strings.Index(all, "create_container"); i < 0 || j < i {
		t.Errorf("rows not in depth-first order: %s", all)
	}
}

// TestPictureSpans checks the picture keeps the kubelet's spans and the path to gomon's, and
// leaves out CRI-O's other spans.
func TestPictureSpans(t *testing.T) {
	tr := kubeletRun(t, "t1", "run1", 3)
	extra := ktrace(t, "t1",
		kspan{"x1", "c1", serviceCRIO, "server.(*Server).createSandboxContainer", nil},
		kspan{"k9", "k1", serviceKubelet, "runtime.v1.ImageService/ImageStatus", nil},
		kspan{"x2", "k9", serviceCRIO, "/runtime.v1.ImageService/ImageStatus", nil},
	)
	tr.Spans = append(tr.Spans, extra.Spans...)
	got := pictureSpans(tr)
	var ids []string
	for _, sp := range got.Spans {
		ids = append(ids, sp.SpanID)
	}
	if want := "k1 k2 c1 c2 g1 g2 g3 g4 k9"; strings.Join(ids, " ") != want {
		t.Errorf("kept %v, want %s", ids, want)
	}
}

func TestShortSpanName(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/cri-o/cri-o/server.(*Server).runPodSandbox":          "server.(*Server).runPodSandbox",
		"github.com/cri-o/cri-o/internal/oci.(*Runtime).CreateContainer": "oci.(*Runtime).CreateContainer",
		"runtime.v1.RuntimeService/CreateContainer":                      "runtime.v1.RuntimeService/CreateContainer",
		"/runtime.v1.RuntimeService/ExecSync":                            "/runtime.v1.RuntimeService/ExecSync",
		"conmonrs-client: CreateContainer":                               "conmonrs-client: CreateContainer",
	} {
		if got := shortSpanName(in); got != want {
			t.Errorf("shortSpanName(%q) = %q, want %q", in, got, want)
		}
	}
}
