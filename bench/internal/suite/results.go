package suite

import (
	"time"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
	"github.com/gomon-dev/gomon/bench/internal/stats"
)

// Results is everything one Run measured.
type Results struct {
	Machine   Machine
	Params    Params
	Durations []StepDuration

	// Latency: per contender, create-to-running and the create part alone,
	// in milliseconds.
	Latency       map[string][]float64
	LatencyCreate map[string][]float64
	// PodStart is how long each gomon pod took to start (client.New), ms.
	PodStart []float64

	// Exec: per contender, exec sync latency in ms; ExecNA holds the reason
	// a contender could not be measured.
	Exec   map[string][]float64
	ExecNA map[string]string

	// Memory: per scenario and contender.
	Memory []MemoryResult

	// Logs: per pattern and contender.
	Logs []LogResult

	// Tracing: gomon with tracing off and on.
	Tracing *TracingResult

	// Neighbour: the noisy-neighbour scenario (neighbour.go).
	Neighbour *NeighbourResult
	// RateCost: gomon's log throughput without and with a rate limit far
	// above the load (ratecost.go).
	RateCost *RateCostResult
	// Metrics: gomon with tracing on, metrics off and on (the same shape).
	Metrics *TracingResult
	// WorkingPod: one daemon's memory through churn and exec syncs.
	WorkingPod *WorkingPodResult
	// Node: many pods at idle, and the Go floor.
	Node *NodeResult
	// Upgrade: the pause of an upgrade in place (upgrade.go).
	Upgrade *UpgradeResult
}

// StepDuration is how long one measure took.
type StepDuration struct {
	Name string
	D    time.Duration
}

// MemoryResult is one scenario's idle memory.
type MemoryResult struct {
	Scenario Scenario
	// By contender: the sum over its monitor processes, and how many there were.
	Mem   map[string]procfs.Memory
	Procs map[string]int
	// MaxPodRSS is the largest VmRSS (KiB) summed over one pod's monitor
	// processes: the per-pod budget applies to every pod, not the mean.
	MaxPodRSS map[string]int64
}

// LogResult is one pattern's throughput samples.
type LogResult struct {
	Pattern string
	Bytes   int64
	// By contender, one per rep: MB/s, monitor CPU seconds per GB from
	// schedstat, and the same from stat's utime+stime.
	MBps          map[string][]float64
	CPUPerGB      map[string][]float64
	CPUTicksPerGB map[string][]float64
	// Errors are verification failures, by contender.
	Errors map[string][]string
	// Records is the number of CRI records of the last rep, by contender.
	Records map[string]int64
	// WarmupMBps is the discarded warm-up run's MB/s, by contender.
	WarmupMBps map[string]float64
}

// TracingResult compares gomon with tracing off and on.
type TracingResult struct {
	Latency map[string][]float64 // create-to-running, ms
	Exec    map[string][]float64 // exec sync, ms; empty when unsupported
	ExecNA  map[string]string
	Memory  map[string]procfs.Memory // one pod, one idle container
	// MemoryReadings is how many readings Memory's medians are of (per
	// contender; 0 in results from before it was recorded: one).
	MemoryReadings int
	// Log throughput of the lines100 pattern in the same run: MB/s and
	// monitor CPU seconds per GB, one sample per rep; LogBytes per sample,
	// LogErrors verification failures.
	LogMBps     map[string][]float64
	LogCPUPerGB map[string][]float64
	LogBytes    int64
	LogErrors   map[string][]string
	Requests    int64 // export requests the sink received
	Bytes       int64
}

// summary is a shortcut for stats.Summarize.
func summary(xs []float64) stats.Summary { return stats.Summarize(xs) }
