package monitor

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/metrics"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
	"github.com/gomon-dev/gomon/monitor/internal/handoff"
)

// Metrics. With Config.Metrics set the monitor records what it already
// counts into cheap instruments (atomic counters the read loops bump once
// per chunk, histograms observed once per exec or create) and
// CollectMetrics reads them; the outputs (the Prometheus textfile, OTLP)
// live outside the engine. Without it no instrument exists and the read
// loops get nil counters: metrics cost nothing when off.
//
// A container's series live as long as the container is known to the
// monitor: while it runs and, once exited, until it is deleted or pushed
// out of the bounded list of exited containers (maxExited); then its
// series are dropped. An upgrade in place carries them, exited or not
// (handoffState, restore). Monitor-level series (creates, runtime failures)
// live as long as the monitor.

// Per-container metrics, labelled with the container's identity
// (containerLabels).
var (
	MetricLogBytes = &metrics.Desc{Name: "gomon.log.bytes", Unit: "By", Kind: metrics.Counter,
		Help: "Container output bytes by stream and outcome: written to the log, or dropped with a reason (disk_full, sink_error, rate_limit, unread)."}
	MetricLogRecords = &metrics.Desc{Name: "gomon.log.records", Unit: "{record}", Kind: metrics.Counter,
		Help: "Container log records (lines, and partial records) by stream and outcome, as gomon.log.bytes."}
	MetricLogPartials = &metrics.Desc{Name: "gomon.log.partial_records", Unit: "{record}", Kind: metrics.Counter,
		Help: "Partial (P) log records: output chunks that did not end with a newline."}
	MetricOOMKills = &metrics.Desc{Name: "gomon.container.oom_kills", Unit: "{kill}", Kind: metrics.Counter,
		Help: "OOM kills seen in the container, of its init process (process=init) or of another process (process=other)."}
	MetricExecDuration = &metrics.Desc{Name: "gomon.exec.sync.duration", Unit: "s", Kind: metrics.Histogram,
		Bounds: metrics.DurationBounds,
		Help:   "Duration of exec syncs by outcome (exit_zero, exit_nonzero, timeout, runtime_error, canceled); the count is the number of execs."}
)

// Monitor-level metrics.
var (
	MetricCreateDuration = &metrics.Desc{Name: "gomon.container.create.duration", Unit: "s", Kind: metrics.Histogram,
		Bounds: metrics.DurationBounds,
		Help:   "Duration of container creates by outcome (success, failure); the count is the number of creates."}
	MetricRuntimeFailures = &metrics.Desc{Name: "gomon.runtime.failures", Unit: "{failure}", Kind: metrics.Counter,
		Help: "OCI runtime commands that failed (non-zero exit, killed, not started, no pidfile), by verb."}
)

// Label keys: OpenTelemetry's Kubernetes and container conventions, and
// gomon's own attributes.
const (
	LabelPodName       = "k8s.pod.name"
	LabelNamespace     = "k8s.namespace.name"
	LabelPodUID        = "k8s.pod.uid"
	LabelContainerName = "k8s.container.name"
	LabelContainerID   = "container.id"
	labelStream        = "stream"
	labelOutcome       = "outcome"
	labelReason        = "reason"
	labelProcess       = "process"
	labelVerb          = "verb"
)

// oomKind says whose OOM kill it was.
type oomKind uint8

const (
	oomInit  oomKind = iota // the container's init process
	oomOther                // another process in the container's cgroup
	numOOMKinds
)

func (k oomKind) String() string {
	if k == oomInit {
		return "init"
	}
	return "other"
}

// execOutcome is how an exec sync ended.
type execOutcome uint8

const (
	execExitZero     execOutcome = iota // the command exited 0
	execExitNonzero                     // the command exited otherwise (a signal included)
	execTimeout                         // TimeoutSec passed: killed, or its output held open
	execRuntimeError                    // the runtime could not run it
	execCanceled                        // the caller went away or the monitor shut down
	numExecOutcomes
)

func (o execOutcome) String() string {
	return [...]string{"exit_zero", "exit_nonzero", "timeout", "runtime_error", "canceled"}[o]
}

// execOutcomeOf classifies an ExecSync result.
func execOutcomeOf(res ExecSyncResult, err error) execOutcome {
	switch {
	case err != nil:
		return execCanceled
	case res.TimedOut:
		return execTimeout
	case res.ExitCode == ExitRuntimeFailed:
		return execRuntimeError
	case res.ExitCode == 0:
		return execExitZero
	default:
		return execExitNonzero
	}
}

// containerMetrics are one container's instruments; nil when metrics are
// off. The counters are written by the read loops and the waiter, the
// histograms by ExecSync; CollectMetrics reads them at any time.
type containerMetrics struct {
	start  time.Time
	labels []metrics.Label // the container's identity; immutable
	// streams are the read loops' counters, by ioloop.Stream - 1.
	streams [2]ioloop.Counters
	// hasStream says which streams have a loop (a terminal has only
	// stdout); set by the create goroutine before the container is
	// published to collection, see startStream.
	hasStream [2]atomic.Bool
	oom       [numOOMKinds]atomic.Uint64
	exec      [numExecOutcomes]*metrics.Hist
}

func newContainerMetrics(id string, ident bundle.Identity) *containerMetrics {
	cm := &containerMetrics{start: time.Now(), labels: containerLabels(id, ident)}
	for i := range cm.exec {
		cm.exec[i] = metrics.NewHist(MetricExecDuration)
	}
	return cm
}

// containerLabels are a container's identity labels: container.id, and
// the Kubernetes ones its bundle named.
func containerLabels(id string, ident bundle.Identity) []metrics.Label {
	l := make([]metrics.Label, 0, 5)
	for _, kv := range [...]metrics.Label{
		{Key: LabelPodName, Value: ident.PodName},
		{Key: LabelNamespace, Value: ident.PodNamespace},
		{Key: LabelPodUID, Value: ident.PodUID},
		{Key: LabelContainerName, Value: ident.ContainerName},
	} {
		if kv.Value != "" {
			l = append(l, kv)
		}
	}
	return append(l, metrics.Label{Key: LabelContainerID, Value: id})
}

// identity returns the identity the labels were made of (containerLabels).
func (cm *containerMetrics) identity() bundle.Identity {
	var id bundle.Identity
	for _, l := range cm.labels {
		switch l.Key {
		case LabelPodName:
			id.PodName = l.Value
		case LabelNamespace:
			id.PodNamespace = l.Value
		case LabelPodUID:
			id.PodUID = l.Value
		case LabelContainerName:
			id.ContainerName = l.Value
		}
	}
	return id
}

// counters returns the live counters of stream s, marking it present;
// nil when metrics are off.
func (cm *containerMetrics) counters(s ioloop.Stream) *ioloop.Counters {
	if cm == nil || s < ioloop.Stdout || s > ioloop.Stderr {
		return nil
	}
	cm.hasStream[s-1].Store(true)
	return &cm.streams[s-1]
}

// addOOM counts n OOM kills of kind k. An exec session's own process
// killed counts as other at once; the container's verdict adds the rest
// at its exit (waitExit), so the counters only grow.
func (cm *containerMetrics) addOOM(k oomKind, n uint64) {
	if cm != nil && k < numOOMKinds && n > 0 {
		cm.oom[k].Add(n)
	}
}

// recordExec records one exec sync.
func (cm *containerMetrics) recordExec(o execOutcome, d time.Duration) {
	if cm != nil {
		cm.exec[o].Observe(d.Seconds())
	}
}

// collect adds the container's series to b.
func (cm *containerMetrics) collect(b *metrics.Batch) {
	for i := range cm.streams {
		if !cm.hasStream[i].Load() {
			continue
		}
		c := &cm.streams[i]
		stream := metrics.Label{Key: labelStream, Value: ioloop.Stream(i + 1).String()}
		written := metrics.Label{Key: labelOutcome, Value: "written"}
		b.Counter(MetricLogBytes, c.WrittenBytes.Load(), cm.start, b.Labels(cm.labels, stream, written)...)
		b.Counter(MetricLogRecords, c.WrittenRecords.Load(), cm.start, b.Labels(cm.labels, stream, written)...)
		for r := range ioloop.NumDropReasons {
			l := b.Labels(cm.labels, stream, metrics.Label{Key: labelOutcome, Value: "dropped"},
				metrics.Label{Key: labelReason, Value: r.String()})
			b.Counter(MetricLogBytes, c.DroppedBytes[r].Load(), cm.start, l...)
			b.Counter(MetricLogRecords, c.DroppedRecords[r].Load(), cm.start, l...)
		}
		b.Counter(MetricLogPartials, c.Partials.Load(), cm.start, b.Labels(cm.labels, stream)...)
	}
	for k := range numOOMKinds {
		b.Counter(MetricOOMKills, cm.oom[k].Load(), cm.start,
			b.Labels(cm.labels, metrics.Label{Key: labelProcess, Value: k.String()})...)
	}
	for o := range numExecOutcomes {
		b.Histogram(MetricExecDuration, cm.exec[o], cm.start,
			b.Labels(cm.labels, metrics.Label{Key: labelOutcome, Value: o.String()})...)
	}
}

// monitorMetrics are the monitor-level instruments; nil when metrics are
// off.
type monitorMetrics struct {
	start  time.Time
	create [2]*metrics.Hist // success, failure

	// mu guards failures, keyed by the verbs knownVerb accepts or
	// "other", so it holds at most 12 entries.
	mu       sync.Mutex
	failures map[string]uint64 // guarded by mu
}

// knownVerb reports whether verb is one of the runtime subcommands gomon
// runs; any other verb is counted as "other", which bounds the failure
// counters. (A switch, not a map: a package-level map would be built at
// start-up even with metrics off.)
func knownVerb(verb string) bool {
	switch verb {
	case "create", "start", "exec", "delete", "kill", "update", "pause", "resume", "state", "checkpoint", "restore":
		return true
	}
	return false
}

func newMonitorMetrics() *monitorMetrics {
	return &monitorMetrics{
		start:    time.Now(),
		create:   [2]*metrics.Hist{metrics.NewHist(MetricCreateDuration), metrics.NewHist(MetricCreateDuration)},
		failures: make(map[string]uint64),
	}
}

// recordCreate records one create's duration and outcome.
func (mm *monitorMetrics) recordCreate(d time.Duration, err error) {
	if mm == nil {
		return
	}
	i := 0
	if err != nil {
		i = 1
	}
	mm.create[i].Observe(d.Seconds())
}

// runtimeFailed counts a failed runtime command.
func (mm *monitorMetrics) runtimeFailed(verb string) {
	if mm == nil {
		return
	}
	if !knownVerb(verb) {
		verb = "other"
	}
	mm.mu.Lock()
	mm.failures[verb]++
	mm.mu.Unlock()
}

func (mm *monitorMetrics) collect(b *metrics.Batch, labels []metrics.Label) {
	for i, outcome := range [...]string{"success", "failure"} {
		b.Histogram(MetricCreateDuration, mm.create[i], mm.start,
			b.Labels(labels, metrics.Label{Key: labelOutcome, Value: outcome})...)
	}
	mm.mu.Lock()
	defer mm.mu.Unlock()
	for _, verb := range slices.Sorted(maps.Keys(mm.failures)) {
		b.Counter(MetricRuntimeFailures, mm.failures[verb], mm.start,
			b.Labels(labels, metrics.Label{Key: labelVerb, Value: verb})...)
	}
}

// CollectMetrics adds the monitor's series to b: every known container's
// (running or exited and not yet forgotten), then the monitor-level ones,
// labelled with podLevel. It does nothing unless Config.Metrics is set.
// Safe for concurrent use.
func (m *Monitor) CollectMetrics(b *metrics.Batch, podLevel ...metrics.Label) {
	if m.metrics == nil {
		return
	}
	m.mu.Lock()
	cms := make([]*containerMetrics, 0, len(m.containers)+len(m.tombs))
	for _, c := range m.containers {
		if c.metrics != nil {
			cms = append(cms, c.metrics)
		}
	}
	for _, t := range m.tombs {
		if t.metrics != nil {
			cms = append(cms, t.metrics)
		}
	}
	m.mu.Unlock()
	for _, cm := range cms {
		cm.collect(b)
	}
	m.metrics.collect(b, podLevel)
}

// PodLabels returns the pod's identity labels (k8s.pod.name,
// k8s.namespace.name, k8s.pod.uid) as the first container created with
// them named it; nil before.
func (m *Monitor) PodLabels() []metrics.Label {
	return m.AppendPodLabels(nil)
}

// AppendPodLabels appends PodLabels to dst.
func (m *Monitor) AppendPodLabels(dst []metrics.Label) []metrics.Label {
	m.mu.Lock()
	id := m.podIdentity
	m.mu.Unlock()
	for _, kv := range [...]metrics.Label{
		{Key: LabelPodName, Value: id.PodName},
		{Key: LabelNamespace, Value: id.PodNamespace},
		{Key: LabelPodUID, Value: id.PodUID},
	} {
		if kv.Value != "" {
			dst = append(dst, kv)
		}
	}
	return dst
}

// handoffState returns the counters for an upgrade's record (nil when
// metrics are off). The container's loops are stopped and no exec runs.
func (cm *containerMetrics) handoffState() *handoff.Metrics {
	if cm == nil {
		return nil
	}
	hm := &handoff.Metrics{Start: cm.start.UnixNano()}
	for i := range cm.streams {
		c := &cm.streams[i]
		sm := handoff.StreamMetrics{
			Present:      cm.hasStream[i].Load(),
			WrittenBytes: c.WrittenBytes.Load(), WrittenRecords: c.WrittenRecords.Load(),
			Partials: c.Partials.Load(),
		}
		for r := range ioloop.NumDropReasons {
			sm.DroppedBytes = append(sm.DroppedBytes, c.DroppedBytes[r].Load())
			sm.DroppedRecords = append(sm.DroppedRecords, c.DroppedRecords[r].Load())
		}
		hm.Streams = append(hm.Streams, sm)
	}
	for k := range cm.oom {
		hm.OOM = append(hm.OOM, cm.oom[k].Load())
	}
	for _, h := range cm.exec {
		counts, n, sum := h.State()
		hm.Exec = append(hm.Exec, handoff.Hist{Counts: counts, Count: n, Sum: sum})
	}
	return hm
}

// restore takes the counters an upgrade carried over; a record of another
// shape is refused (false) and the counters start from zero.
func (cm *containerMetrics) restore(hm *handoff.Metrics) bool {
	if cm == nil || hm == nil {
		return false
	}
	if len(hm.Streams) != len(cm.streams) || len(hm.OOM) != len(cm.oom) || len(hm.Exec) != len(cm.exec) {
		return false
	}
	for _, sm := range hm.Streams {
		if len(sm.DroppedBytes) != int(ioloop.NumDropReasons) || len(sm.DroppedRecords) != int(ioloop.NumDropReasons) {
			return false
		}
	}
	for i, h := range hm.Exec {
		if !cm.exec[i].SetState(h.Counts, h.Count, h.Sum) {
			return false
		}
	}
	cm.start = time.Unix(0, hm.Start)
	for i, sm := range hm.Streams {
		// A running container's loop marks its streams again; an
		// exited one's are marked here or nowhere.
		if sm.Present {
			cm.hasStream[i].Store(true)
		}
		c := &cm.streams[i]
		c.WrittenBytes.Store(sm.WrittenBytes)
		c.WrittenRecords.Store(sm.WrittenRecords)
		c.Partials.Store(sm.Partials)
		for r := range ioloop.NumDropReasons {
			c.DroppedBytes[r].Store(sm.DroppedBytes[r])
			c.DroppedRecords[r].Store(sm.DroppedRecords[r])
		}
	}
	for k := range cm.oom {
		cm.oom[k].Store(hm.OOM[k])
	}
	return true
}
