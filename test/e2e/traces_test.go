package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// Service names as they appear in Jaeger.
const (
	serviceCrictl  = "cri-tools"
	serviceCRIO    = "crio"
	serviceGomon   = "gomon"
	serviceKubelet = "kubelet"
)

// jaegerTrace is the part of Jaeger's /api/traces JSON the checks read.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		StartTime     int64  `json:"startTime"` // µs since the epoch
		Duration      int64  `json:"duration"`  // µs
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []jaegerKV `json:"tags"`
		Logs []struct {
			Fields []jaegerKV `json:"fields"`
		} `json:"logs"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// jaegerKV is one tag or log field.
type jaegerKV struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// span is one span of a trace with its service and parent resolved.
type span struct {
	id, parent, name, service string
	tags                      map[string]any
	logs                      int   // span events (gomon's log records)
	start, dur                int64 // µs: start since the epoch, duration
}

// spans flattens a trace.
func (tr jaegerTrace) spans() map[string]span {
	m := make(map[string]span, len(tr.Spans))
	for _, sp := range tr.Spans {
		s := span{id: sp.SpanID, name: sp.OperationName, service: tr.Processes[sp.ProcessID].ServiceName,
			tags: map[string]any{}, logs: len(sp.Logs), start: sp.StartTime, dur: sp.Duration}
		for _, kv := range sp.Tags {
			s.tags[kv.Key] = kv.Value
		}
		for _, r := range sp.References {
			if r.RefType == "CHILD_OF" {
				s.parent = r.SpanID
			}
		}
		m[sp.SpanID] = s
	}
	return m
}

// traces fetches the recent traces of service from Jaeger's JSON API.
func (s *suite) traces(service string) ([]jaegerTrace, error) {
	q := url.Values{"service": {service}, "limit": {"2000"}, "lookback": {"1h"}}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := s.jaegerGet("/api/traces?"+q.Encode(), &body); err != nil {
		return nil, err
	}
	return body.Data, nil
}

// jaegerGet decodes one JSON answer of Jaeger's query API.
func (s *suite) jaegerGet(path string, v any) error {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(s.queryURL + path)
	if err != nil {
		return fmt.Errorf("jaeger query: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger query %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode jaeger answer: %w", err)
	}
	return nil
}

// checkTraces checks that crictl's spans parent CRI-O's, and (with GOMON_E2E_EXPECT_TRACES=1)
// that gomon's RPC spans are children of CRI-O's conmon-rs client spans in the same traces.
func (s *suite) checkTraces(t *testing.T) {
	expect := os.Getenv("GOMON_E2E_EXPECT_TRACES") == "1"
	var crioLinked int
	var gomonFound gomonSpans
	// CRI-O's batch span processor exports every 5 s; gomon flushes when it shuts down.
	err := poll(30*time.Second, time.Second, func() error {
		trs, err := s.traces(serviceCRIO)
		if err != nil {
			return err
		}
		crioLinked = countLinked(trs, serviceCrictl, serviceCRIO)
		if crioLinked == 0 {
			return fmt.Errorf("%d crio traces, none with a crio span under a %s span", len(trs), serviceCrictl)
		}
		gtrs, err := s.traces(serviceGomon)
		if err != nil {
			return err
		}
		gomonFound = findGomonSpans(gtrs)
		if expect {
			return errors.Join(gomonFound.problem(s.gomonCreates), gomonFound.missingIdentities(s.gomonContainers))
		}
		return nil
	})
	var services struct {
		Data []string `json:"data"`
	}
	_ = s.jaegerGet("/api/services", &services)
	t.Logf("jaeger services: %v; crictl→crio linked traces: %d; gomon: %s", services.Data, crioLinked, gomonFound)
	s.saveTraces(t)
	if crioLinked == 0 {
		t.Fatalf("no trace links a %s span to a crio span: %v", serviceCrictl, err)
	}
	if p := errors.Join(gomonFound.problem(s.gomonCreates), gomonFound.missingIdentities(s.gomonContainers)); p != nil {
		if !expect {
			t.Skipf("\n"+strings.Repeat("!", 78)+"\n"+
				"!! gomon TRACE CHECK SKIPPED (GOMON_E2E_EXPECT_TRACES is not 1): %v\n"+
				"!! gomon's tracing is not exported yet; set GOMON_E2E_EXPECT_TRACES=1 once it is.\n"+
				strings.Repeat("!", 78), p)
		}
		t.Errorf("gomon traces: %v", p)
	}
}

// countLinked counts traces with a span of service child whose parent is a span of parent.
func countLinked(trs []jaegerTrace, parent, child string) int {
	n := 0
	for _, tr := range trs {
		spans := tr.spans()
		for _, sp := range spans {
			if p, ok := spans[sp.parent]; ok && sp.service == child && p.service == parent {
				n++
				break
			}
		}
	}
	return n
}

// gomonSpans summarises what gomon exported.
type gomonSpans struct {
	traces      int
	names       map[string]int // gomon span name → count
	linked      int            // create_container spans whose parent is a crio conmonrs-client span
	fullChain   int            // ... in a trace that also holds a crictl span above it
	badParents  []string       // create_container parents that are not crio's
	parentNames map[string]int
	edges       map[string]int // "parent>child" between gomon spans
	exitCodes   int            // wait_for_exit_code spans carrying exit_code
	logged      int            // create_container spans with log events
	// unlabelled lists container spans (identitySpans) without the container's Kubernetes
	// identity or container.id.
	unlabelled []string
	// waited counts the wait_for_exit_code spans per identity they carry.
	waited map[podIdentity]int
}

// podIdentity is a container's identity as gomon's spans carry it (OpenTelemetry's names).
type podIdentity struct{ pod, namespace, uid, container string }

// identitySpans are the gomon spans of one container, which carry its identity.
var identitySpans = []string{"create_container", "runtime_create", "read_loop", "wait_for_exit_code",
	"exec_sync_container", "runtime_exec"}

// identityOf reads a span's container identity tags; ok is false when one is missing, or
// container.id differs from the older container_id.
func identityOf(sp span) (podIdentity, bool) {
	id := podIdentity{pod: tagStr(sp, "k8s.pod.name"), namespace: tagStr(sp, "k8s.namespace.name"),
		uid: tagStr(sp, "k8s.pod.uid"), container: tagStr(sp, "k8s.container.name")}
	ctr := tagStr(sp, "container.id")
	ok := id.pod != "" && id.namespace != "" && id.uid != "" && id.container != "" &&
		ctr != "" && ctr == tagStr(sp, "container_id")
	return id, ok
}

// tagStr returns a string tag of sp, "" when absent.
func tagStr(sp span, key string) string {
	v, _ := sp.tags[key].(string)
	return v
}

// findGomonSpans looks at every trace holding gomon spans.
func findGomonSpans(trs []jaegerTrace) gomonSpans {
	g := gomonSpans{traces: len(trs), names: map[string]int{}, parentNames: map[string]int{}, edges: map[string]int{},
		waited: map[podIdentity]int{}}
	for _, tr := range trs {
		spans := tr.spans()
		for _, sp := range spans {
			if sp.service != serviceGomon {
				continue
			}
			g.names[sp.name]++
			if p, ok := spans[sp.parent]; ok && p.service == serviceGomon {
				g.edges[p.name+">"+sp.name]++
			}
			if _, ok := sp.tags["exit_code"]; ok && sp.name == "wait_for_exit_code" {
				g.exitCodes++
			}
			if slices.Contains(identitySpans, sp.name) {
				id, ok := identityOf(sp)
				if !ok {
					g.unlabelled = append(g.unlabelled, fmt.Sprintf("%s %s (tags %v)", sp.name, sp.id, sp.tags))
				} else if sp.name == "wait_for_exit_code" {
					g.waited[id]++
				}
			}
			if sp.name != "create_container" {
				continue
			}
			if sp.logs > 0 {
				g.logged++
			}
			p, ok := spans[sp.parent]
			if !ok || p.service != serviceCRIO || !strings.HasPrefix(p.name, "conmonrs-client: ") {
				g.badParents = append(g.badParents, fmt.Sprintf("%s (parent %q in service %q)", sp.id, p.name, p.service))
				continue
			}
			g.parentNames[p.name]++
			g.linked++
			if hasAncestor(spans, p, serviceCrictl) {
				g.fullChain++
			}
		}
	}
	return g
}

// hasAncestor reports whether one of sp's ancestors belongs to service.
func hasAncestor(spans map[string]span, sp span, service string) bool {
	for range len(spans) {
		p, ok := spans[sp.parent]
		if !ok {
			return false
		}
		if p.service == service {
			return true
		}
		sp = p
	}
	return false
}

// problem says what is missing for the gomon trace check to pass (nil when nothing), given
// how many containers were created through the gomon handler.
func (g gomonSpans) problem(creates int) error {
	var missing []string
	if g.traces == 0 {
		return errors.New("no traces with service \"gomon\" in Jaeger")
	}
	if g.fullChain < max(creates, 1) {
		missing = append(missing, fmt.Sprintf("%d create_container spans in a cri-tools → crio → gomon chain, want %d (one per container created through gomon)",
			g.fullChain, max(creates, 1)))
	}
	for _, n := range []string{"read_loop", "wait_for_exit_code"} {
		if g.names[n] == 0 {
			missing = append(missing, "no "+n+" span")
		}
	}
	// The structure under each RPC span, as gomon builds it.
	for _, e := range []string{"create_container>runtime_create", "create_container>read_loop",
		"create_container>wait_for_exit_code", "exec_sync_container>runtime_exec"} {
		if g.edges[e] == 0 {
			missing = append(missing, "no "+strings.Replace(e, ">", " span under ", 1)+"'s parent span")
		}
	}
	if g.exitCodes == 0 {
		missing = append(missing, "no wait_for_exit_code span with an exit_code tag")
	}
	if g.logged == 0 {
		missing = append(missing, "no create_container span with log events")
	}
	if len(g.unlabelled) > 0 {
		missing = append(missing, "container spans without k8s.pod.name, k8s.namespace.name, k8s.pod.uid, "+
			"k8s.container.name and container.id: "+strings.Join(g.unlabelled, ", "))
	}
	if len(g.badParents) > 0 {
		missing = append(missing, "create_container spans not under a crio conmonrs-client span: "+strings.Join(g.badParents, ", "))
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// missingIdentities lists the wanted container identities that no wait_for_exit_code span
// carries.
func (g gomonSpans) missingIdentities(want []podIdentity) error {
	var missing []string
	for _, id := range want {
		if g.waited[id] == 0 {
			missing = append(missing, fmt.Sprintf("%+v", id))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no wait_for_exit_code span carries the identity of %s (found %v)", strings.Join(missing, ", "), g.waited)
	}
	return nil
}

// String lists the counts for the log.
func (g gomonSpans) String() string {
	names := make([]string, 0, len(g.names))
	for n, c := range g.names {
		names = append(names, fmt.Sprintf("%s×%d", n, c))
	}
	sort.Strings(names)
	parents := make([]string, 0, len(g.parentNames))
	for n, c := range g.parentNames {
		parents = append(parents, fmt.Sprintf("%q×%d", n, c))
	}
	sort.Strings(parents)
	return fmt.Sprintf("%d traces, spans [%s], create_container under crio %d (parents %s), full chain %d",
		g.traces, strings.Join(names, " "), g.linked, strings.Join(parents, " "), g.fullChain)
}

// saveTraces writes the raw traces of the three services next to the logs, for debugging.
func (s *suite) saveTraces(t *testing.T) {
	t.Helper()
	for _, svc := range []string{serviceCrictl, serviceCRIO, serviceGomon} {
		trs, err := s.traces(svc)
		if err != nil {
			continue
		}
		b, err := json.MarshalIndent(trs, "", " ")
		if err != nil {
			continue
		}
		_ = os.WriteFile(filepath.Join(s.dir, "traces-"+svc+".json"), b, 0o644)
	}
}
