package e2e

import (
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// kubeletWant is what the kubelet test ran, for the trace check.
type kubeletWant struct {
	exiterRuns []string // exiter's container IDs: a run that exited 3, and the run the deletion ended
	lastExiter string   // the run the deletion ended (it exits 3 on SIGTERM)
	sleeper    string   // the container the liveness probe execs in
}

// runSpans counts gomon's spans for one container: its read_loop and
// wait_for_exit_code spans in the kubelet's trace (under gomon's
// create_container of the same container, under crio, under the kubelet),
// and those found anywhere else.
type runSpans struct {
	readLoops int
	exitCodes []int // exit_code of each wait_for_exit_code span
	elsewhere int
}

// inKubeletRun reports whether sp, a span of container ctr, sits below
// gomon's create_container span of ctr in a kubelet → crio → gomon chain.
func inKubeletRun(spans map[string]span, sp span, ctr string, chain []string) bool {
	if !slices.Equal(collapsedServices(spans, sp), chain) {
		return false
	}
	for p, ok := spans[sp.parent]; ok; p, ok = spans[p.parent] {
		if p.service == serviceGomon && p.name == "create_container" {
			return tagString(p, "container_id") == ctr
		}
	}
	return false
}

// kubeletFound is what the kubelet test's traces hold.
type kubeletFound struct {
	chains      int // create_container ⊃ runtime_create below crio below kubelet
	chainTraces []string
	runs        map[string]runSpans
	probes      int // exec_sync_container ⊃ runtime_exec in the sleeper, below crio's and the kubelet's ExecSync
	probeNames  map[string]int
}

// collapsedServices lists the services from sp up to the trace root, consecutive repeats
// collapsed (a create_container span under crio under the kubelet gives gomon, crio, kubelet).
func collapsedServices(spans map[string]span, sp span) []string {
	out := []string{sp.service}
	for range len(spans) {
		p, ok := spans[sp.parent]
		if !ok {
			break
		}
		if p.service != out[len(out)-1] {
			out = append(out, p.service)
		}
		sp = p
	}
	return out
}

// ancestorNamed reports whether an ancestor of sp in service has a name containing part.
func ancestorNamed(spans map[string]span, sp span, service, part string) bool {
	for range len(spans) {
		p, ok := spans[sp.parent]
		if !ok {
			return false
		}
		if p.service == service && strings.Contains(p.name, part) {
			return true
		}
		sp = p
	}
	return false
}

// childNames returns, per span ID, the names of its children.
func childNames(spans map[string]span) map[string][]string {
	m := map[string][]string{}
	for _, sp := range spans {
		if sp.parent != "" {
			m[sp.parent] = append(m[sp.parent], sp.name)
		}
	}
	return m
}

// tagInt returns an integer tag (Jaeger's JSON numbers decode as float64).
func tagInt(sp span, key string) (int, bool) {
	switch v := sp.tags[key].(type) {
	case float64:
		return int(v), true
	case int:
		return v, true
	}
	return 0, false
}

// tagString returns a string tag.
func tagString(sp span, key string) string {
	s, _ := sp.tags[key].(string)
	return s
}

// findKubeletSpans looks at every trace holding gomon spans.
func findKubeletSpans(trs []jaegerTrace, want kubeletWant) kubeletFound {
	f := kubeletFound{runs: map[string]runSpans{}, probeNames: map[string]int{}}
	chain := []string{serviceGomon, serviceCRIO, serviceKubelet}
	for _, tr := range trs {
		spans := tr.spans()
		kids := childNames(spans)
		seen := map[string]bool{}
		// Span IDs sorted, so the counts do not depend on map order.
		ids := make([]string, 0, len(spans))
		for id := range spans {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			sp := spans[id]
			if sp.service != serviceGomon {
				continue
			}
			ctr := tagString(sp, "container_id")
			switch sp.name {
			case "create_container":
				if slices.Equal(collapsedServices(spans, sp), chain) && slices.Contains(kids[sp.id], "runtime_create") {
					f.chains++
					if !seen[tr.TraceID] {
						f.chainTraces = append(f.chainTraces, tr.TraceID)
						seen[tr.TraceID] = true
					}
				}
			case "read_loop", "wait_for_exit_code":
				r := f.runs[ctr]
				code, hasCode := tagInt(sp, "exit_code")
				switch {
				case !inKubeletRun(spans, sp, ctr, chain):
					r.elsewhere++
				case sp.name == "read_loop":
					r.readLoops++
				case hasCode:
					r.exitCodes = append(r.exitCodes, code)
				}
				f.runs[ctr] = r
			case "exec_sync_container":
				if ctr != want.sleeper || !slices.Equal(collapsedServices(spans, sp), chain) ||
					!ancestorNamed(spans, sp, serviceCRIO, "ExecSync") || !ancestorNamed(spans, sp, serviceKubelet, "ExecSync") ||
					!slices.Contains(kids[sp.id], "runtime_exec") {
					continue
				}
				f.probes++
				for p := spans[sp.parent]; p.id != ""; p = spans[p.parent] {
					f.probeNames[p.service+": "+p.name]++
				}
			}
		}
	}
	return f
}

// minProbes is how many probe ExecSyncs the check wants to see traced: the probe runs every
// 2 s for the ~20 s the pod lives before its deletion, so two is a low bar that still shows
// the probe repeating.
const minProbes = 2

// problems says what the kubelet test's traces lack (empty when nothing).
func (f kubeletFound) problems(want kubeletWant) []string {
	var out []string
	if f.chains == 0 {
		out = append(out, "no gomon create_container span with a runtime_create child under a crio span under a kubelet span")
	}
	for _, id := range want.exiterRuns {
		r := f.runs[id]
		what := "exiter run " + short(id)
		if id == want.lastExiter {
			what = "exiter's LAST run " + short(id) + " (it ended with the pod's deletion; the kubelet's pod cleanup SIGKILLs gomon ~1-2 s after the last container stopped, so unless gomon exports a finished container's spans at once they reach Jaeger only when a 5 s batch tick happens to fall in between)"
		}
		where := " in the kubelet's trace"
		if r.elsewhere > 0 {
			where += fmt.Sprintf(" (%d of its spans are outside it)", r.elsewhere)
		}
		if r.readLoops == 0 {
			out = append(out, what+": no read_loop span"+where)
		}
		if !slices.Contains(r.exitCodes, exiterExitCode) {
			out = append(out, fmt.Sprintf("%s: no wait_for_exit_code span with exit_code %d%s (found %v)", what, exiterExitCode, where, r.exitCodes))
		}
	}
	if f.probes < minProbes {
		out = append(out, fmt.Sprintf("%d probe exec_sync_container spans (with runtime_exec, in %s, under crio's and the kubelet's ExecSync), want at least %d",
			f.probes, short(want.sleeper), minProbes))
	}
	return out
}

// String summarises the counts for the log.
func (f kubeletFound) String() string {
	var runs []string
	for id, r := range f.runs {
		runs = append(runs, fmt.Sprintf("%s: read_loop×%d exit_codes %v, elsewhere×%d", short(id), r.readLoops, r.exitCodes, r.elsewhere))
	}
	sort.Strings(runs)
	var probe []string
	for n, c := range f.probeNames {
		probe = append(probe, fmt.Sprintf("%q×%d", n, c))
	}
	sort.Strings(probe)
	return fmt.Sprintf("kubelet→crio→gomon create_container⊃runtime_create: %d (in %d traces); per container: [%s]; probes: %d, their ancestors [%s]",
		f.chains, len(f.chainTraces), strings.Join(runs, "; "), f.probes, strings.Join(probe, " "))
}

// checkTraces polls Jaeger until the kubelet test's traces are complete (or a deadline), saves
// them and draws one pod's trace as an SVG waterfall.
func (k *kubeletEnv) checkTraces(t *testing.T, want kubeletWant) {
	t.Helper()
	s := k.s
	var found kubeletFound
	var trs []jaegerTrace
	var problems []string
	// The kubelet's and CRI-O's batch exporters send every 5 s.
	start := time.Now()
	err := poll(45*time.Second, time.Second, func() error {
		var err error
		trs, err = s.traces(serviceGomon)
		if err != nil {
			return err
		}
		found = findKubeletSpans(trs, want)
		problems = found.problems(want)
		if len(problems) > 0 {
			return fmt.Errorf("%d problems", len(problems))
		}
		return nil
	})
	t.Logf("traces (after %v): %s", time.Since(start).Round(time.Second), found)
	for _, svc := range []string{serviceGomon, serviceKubelet} {
		all, err := s.traces(svc)
		if err != nil {
			continue
		}
		if b, err := json.MarshalIndent(all, "", " "); err == nil {
			_ = os.WriteFile(filepath.Join(s.dir, "traces-"+svc+".json"), b, 0o644)
		}
	}
	if full, ok := pictureTrace(trs, want); ok {
		tr := pictureSpans(full)
		svg := traceSVG(tr, fmt.Sprintf("a static pod started by the kubelet: kubelet → CRI-O → gomon (%d of the trace's %d spans: CRI-O's internal ones left out)",
			len(tr.Spans), len(full.Spans)))
		p := filepath.Join(s.dir, "kubelet-trace.svg")
		if err := os.WriteFile(p, svg, 0o644); err != nil {
			t.Errorf("write %s: %v", p, err)
		}
		t.Logf("trace %s drawn in %s (%d spans)", tr.TraceID, p, len(tr.Spans))
		if dst := os.Getenv("GOMON_E2E_TRACE_SVG"); dst != "" {
			if err := os.WriteFile(dst, svg, 0o644); err != nil {
				t.Errorf("write GOMON_E2E_TRACE_SVG=%s: %v", dst, err)
			} else {
				t.Logf("trace picture written to %s", dst)
			}
		}
	}
	if err != nil {
		t.Errorf("kubelet traces: %v:\n  %s", err, strings.Join(problems, "\n  "))
	}
}

// pictureTrace picks the trace to draw: one holding exiter's first run's create_container under
// crio and the kubelet, with its wait_for_exit_code exit code 3 (the most spans wins a tie).
func pictureTrace(trs []jaegerTrace, want kubeletWant) (jaegerTrace, bool) {
	var best jaegerTrace
	bestScore := -1
	for _, tr := range trs {
		spans := tr.spans()
		score := -1
		for _, sp := range spans {
			if sp.service != serviceGomon || sp.name != "wait_for_exit_code" {
				continue
			}
			code, _ := tagInt(sp, "exit_code")
			p := spans[sp.parent]
			if code == exiterExitCode && p.name == "create_container" &&
				slices.Equal(collapsedServices(spans, p), []string{serviceGomon, serviceCRIO, serviceKubelet}) &&
				slices.Contains(want.exiterRuns, tagString(sp, "container_id")) {
				score = len(tr.Spans)
			}
		}
		if score > bestScore {
			best, bestScore = tr, score
		}
	}
	return best, bestScore >= 0
}

// pictureSpans keeps the spans a reader of the picture needs: the kubelet's, gomon's, and
// those on the way from the kubelet to gomon (CRI-O's CRI server and conmon-rs client spans);
// CRI-O's many spans for its internal functions are left out. The kept set holds every kept
// span's parent, so the tree stays whole.
func pictureSpans(tr jaegerTrace) jaegerTrace {
	spans := tr.spans()
	keep := map[string]bool{}
	for _, sp := range spans {
		switch sp.service {
		case serviceKubelet:
			keep[sp.id] = true
		case serviceGomon:
			for p, ok := sp, true; ok && !keep[p.id]; p, ok = spans[p.parent] {
				keep[p.id] = true
			}
		}
	}
	out := tr
	out.Spans = nil
	for _, sp := range tr.Spans {
		if keep[sp.SpanID] {
			out.Spans = append(out.Spans, sp)
		}
	}
	return out
}

// Colours of the picture's services; others are grey.
var serviceColors = map[string]string{
	serviceKubelet: "#326ce5", // Kubernetes blue
	serviceCRIO:    "#e8731a",
	serviceGomon:   "#00a29c",
}

// fmtMicros renders a duration given in µs the way Jaeger's UI does.
func fmtMicros(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1000000:
		return fmt.Sprintf("%.2fms", float64(us)/1000)
	default:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	}
}

// shortSpanName drops the package path of CRI-O's function spans
// ("github.com/cri-o/cri-o/server.(*Server).runPodSandbox" becomes "server.(*Server).runPodSandbox").
func shortSpanName(name string) string {
	if !strings.HasPrefix(name, "github.com/") {
		return name
	}
	head := name
	if i := strings.Index(name, "("); i >= 0 {
		head = name[:i]
	}
	if i := strings.LastIndex(head, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

// traceSVG draws tr as a waterfall like Jaeger's trace view: one row per span in depth-first
// order (children by start time), indented by depth, a bar per span on a shared time axis,
// coloured by service. Tags worth seeing (exit_code, stream) follow the span name.
func traceSVG(tr jaegerTrace, caption string) []byte {
	spans := tr.spans()
	children := map[string][]span{}
	var roots []span
	t0, t1 := int64(-1), int64(0)
	for _, sp := range spans {
		if _, ok := spans[sp.parent]; ok {
			children[sp.parent] = append(children[sp.parent], sp)
		} else {
			roots = append(roots, sp)
		}
		if t0 < 0 || sp.start < t0 {
			t0 = sp.start
		}
		t1 = max(t1, sp.start+sp.dur)
	}
	byStart := func(list []span) {
		sort.Slice(list, func(i, j int) bool {
			if list[i].start != list[j].start {
				return list[i].start < list[j].start
			}
			return list[i].id < list[j].id
		})
	}
	type row struct {
		sp    span
		depth int
	}
	var rows []row
	var walk func(sp span, depth int)
	walk = func(sp span, depth int) {
		rows = append(rows, row{sp, depth})
		kids := children[sp.id]
		byStart(kids)
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		walk(r, 0)
	}
	total := max(t1-t0, 1)

	const (
		width, labelW, barX, barW = 1200, 470, 480, 640
		rowH, top                 = 18, 74
	)
	height := top + len(rows)*rowH + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="8" y="18" font-size="13" font-weight="bold">%s</text>`+"\n", html.EscapeString(caption))
	fmt.Fprintf(&b, `<text x="8" y="36" fill="#555">trace %s · %d spans · %s · drawn from Jaeger's /api/traces JSON by test/e2e</text>`+"\n",
		html.EscapeString(tr.TraceID), len(rows), fmtMicros(total))
	// Legend.
	x := 8
	for _, svc := range []string{serviceKubelet, serviceCRIO, serviceGomon} {
		fmt.Fprintf(&b, `<rect x="%d" y="46" width="10" height="10" fill="%s"/><text x="%d" y="55">%s</text>`+"\n", x, serviceColors[svc], x+14, svc)
		x += 14 + 8*len(svc) + 16
	}
	// Time axis.
	for i := range 5 {
		ax := barX + barW*i/4
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", ax, top-8, ax, height-24)
		anchor := "middle"
		if i == 4 {
			anchor = "end"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555" text-anchor="%s">%s</text>`+"\n", ax, top-10, anchor, fmtMicros(total*int64(i)/4))
	}
	for i, r := range rows {
		y := top + i*rowH
		if i%2 == 1 {
			fmt.Fprintf(&b, `<rect x="0" y="%d" width="%d" height="%d" fill="#f5f5f5"/>`+"\n", y, width, rowH)
		}
		color, ok := serviceColors[r.sp.service]
		if !ok {
			color = "#888888"
		}
		label := shortSpanName(r.sp.name)
		if code, ok := tagInt(r.sp, "exit_code"); ok {
			label += fmt.Sprintf(" exit_code=%d", code)
		}
		if st := tagString(r.sp, "stream"); st != "" {
			label += " " + st
		}
		indent := 8 + r.depth*10
		maxChars := (labelW-indent)/7 - len(r.sp.service) - 1
		if maxChars < 8 {
			maxChars = 8
		}
		if len([]rune(label)) > maxChars {
			label = string([]rune(label)[:maxChars-1]) + "…"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d"><tspan fill="%s" font-weight="bold">%s</tspan> %s</text>`+"\n",
			indent, y+13, color, html.EscapeString(r.sp.service), html.EscapeString(label))
		bx := float64(barX) + float64(r.sp.start-t0)/float64(total)*barW
		bw := max(float64(r.sp.dur)/float64(total)*barW, 1.5)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="2" fill="%s"/>`+"\n", bx, y+3, bw, rowH-6, color)
		if bx+bw+70 < barX+barW {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333">%s</text>`+"\n", bx+bw+4, y+13, fmtMicros(r.sp.dur))
		} else {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333" text-anchor="end">%s</text>`+"\n", bx-4, y+13, fmtMicros(r.sp.dur))
		}
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}
