package daemon

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The daemon's Go runtime settings (docs/reliability.md, "Memory").
//
// A monitor is idle most of its life with a live heap well under 1 MiB,
// but Go's default GC lets the heap reach 4 MiB before a collection (GOGC
// has a 4 MiB minimum heap goal) and keeps the pages it used: a pod that
// churned through containers and execs sat ~5 MiB above its idle size
// for good. Measured alternatives (docs/reliability.md): a soft memory
// limit near the idle size, or one that tracks the live heap with a
// 1 MiB minimum heap, held the churn to +1 MiB of anonymous memory, but
// made the log path collect far more often (its pooled 128 KiB read and
// 384 KiB record buffers are dropped by every second GC and allocated
// again) and cost 30 to 75% more CPU per GB of log; GOGC=25 still grew by
// 2.8 MiB. What costs the log path nothing is giving the pages back:
// when an RPC or a container ends, and every reclaimPeriod, if the heap
// holds more than reclaimSlack of
// memory beyond its live part (garbage not collected yet, or free pages
// not returned), the daemon collects and returns them at once
// (debug.FreeOSMemory, one GC); and once the heap has stopped growing
// after some work, it returns what is left. An idle daemon, or one
// streaming logs (which allocates next to nothing per chunk), does
// neither.
//
// Operators' GOGC and GOMEMLIMIT apply as usual (nothing here sets
// them); a GOMAXPROCS in the environment replaces the cap below.
const (
	// maxProcs caps GOMAXPROCS: a pod's monitor does not need more than
	// two cores at once (C conmon uses one per container), and every P
	// can end up with an OS thread of its own on a large node.
	maxProcs = 2
	// reclaimPeriod is how often the heap is checked; reclaimSlack is
	// how much reclaimable memory makes the check collect.
	reclaimPeriod = 5 * time.Second
	reclaimSlack  = 1 << 20
	// busySlack is the reclaimable memory that makes the check at the
	// end of a call collect: the garbage a few dozen calls leave.
	busySlack = 256 << 10
	// quietGrowth is the heap growth between two checks below which the
	// daemon counts as quiet.
	quietGrowth = 64 << 10
	// firstSlack replaces both slacks until the runtime has finished a
	// collection of its own accord or ours. Until then the live heap is
	// unknown (its metric reads 0), so all the heap holds would count as
	// reclaimable, and a daemon that has served a few calls would collect
	// at once. That first collection costs more than it frees: the GC's
	// metadata (mark bits, work buffers), about 0.35 MiB kept for good,
	// against start-up's and a few calls' garbage (docs/reliability.md,
	// "Memory of a working daemon").
	firstSlack = 2 << 20
)

// heapSamples are the runtime metrics the reclaim check reads.
var heapSamples = []string{
	"/gc/cycles/total:gc-cycles",         // collections finished
	"/gc/heap/live:bytes",                // live after the last GC
	"/memory/classes/heap/objects:bytes", // live and dead objects
	"/memory/classes/heap/unused:bytes",  // fragmentation in spans
	"/memory/classes/heap/free:bytes",    // free, not returned to the OS
}

// tuneRuntime applies the daemon's runtime settings unless the
// environment (lookup: os.LookupEnv) sets them, and starts the reclaim
// check. The returned tuner's Poke asks for a check now, without waiting
// for the next period: the daemon calls it when an RPC or a container
// ends, the moments garbage is left behind, so a burst of calls is
// collected when it crosses reclaimSlack rather than when the heap
// reaches Go's 4 MiB minimum goal or the period ends. Started says that
// start-up is over, and the code only start-up ran can be released
// (releaseCodePages), as it is again after work and collections (see run).
// Neither blocks; Stop ends the check.
func tuneRuntime(lookup func(string) (string, bool)) *tuner {
	if _, ok := lookup("GOMAXPROCS"); !ok {
		if n := runtime.GOMAXPROCS(0); n > maxProcs {
			runtime.GOMAXPROCS(maxProcs)
		}
	}
	t := newTuner(func() { _, _ = releaseCodePages() })
	tick := time.NewTicker(reclaimPeriod)
	go func() {
		defer tick.Stop()
		t.run(newReclaimer(debug.FreeOSMemory), tick.C)
	}()
	return t
}

// tuner is the goroutine behind tuneRuntime.
type tuner struct {
	poked, started chan struct{}
	done, finished chan struct{}
	// release unmaps the code pages (releaseCodePages) and gcCycles
	// counts the collections finished; seams for the tests.
	release  func()
	gcCycles func() uint64
	// handled, when set, is called once each event has been handled
	// (a seam for the tests).
	handled func()
}

func newTuner(release func()) *tuner {
	return &tuner{
		poked:    make(chan struct{}, 1),
		started:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		release:  release,
		gcCycles: gcCycles(),
	}
}

// run is the tuner's goroutine: a reclaim check on every tick, a busy
// one when poked, and the code pages released when started and whenever
// code may have been mapped since the last release, checked at the end
// of each period: calls or a container's end in the period; the quiet
// period after those or after start-up (what ran after the last call:
// connections closed, goroutines ended); or a collection (the
// reclaimer's, or the runtime's own every two minutes), which unwinds
// every goroutine's stack through the function tables and runs the
// collector's code. So a busy daemon keeps mapped what the last few
// seconds ran, and an idle one releases once.
func (t *tuner) run(r *reclaimer, tick <-chan time.Time) {
	defer close(t.finished)
	// busy: a call or a container ended since the last release; trail:
	// the last release was made under work, so the first quiet period
	// releases once more. gcs counts the collections made before the
	// last release.
	var (
		busy, trail bool
		gcs         uint64
	)
	released := func(underWork bool) {
		t.release()
		busy, trail, gcs = false, underWork, t.gcCycles()
	}
	for {
		select {
		case <-t.done:
			return
		case <-t.started:
			// Start-up goes on after Started (the server's goroutines
			// start): count it as work.
			released(true)
		case <-tick:
			r.check()
			switch {
			case busy:
				released(true)
			case trail || t.gcCycles() != gcs:
				released(false)
			}
		case <-t.poked:
			// A collection the reclaimer makes here, between calls,
			// waits for the period's end to be released: releasing at
			// once gave the working pod 0.2 MiB less VmRSS at its
			// largest for 12% more CPU (docs/reliability.md, "Code
			// pages").
			busy = true
			r.checkBusy()
		}
		if t.handled != nil {
			t.handled()
		}
	}
}

// gcCycles returns a reader of the number of collections finished.
func gcCycles() func() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	return func() uint64 {
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[0].Value.Uint64()
	}
}

// Poke asks for a check now: an RPC or a container just ended.
func (t *tuner) Poke() { notify(t.poked) }

// Started says start-up is over: the daemon serves.
func (t *tuner) Started() { notify(t.started) }

// Stop ends the checks and waits for them.
func (t *tuner) Stop() {
	close(t.done)
	<-t.finished
}

// notify sends on a channel of capacity 1 without blocking: a signal
// already pending covers this one.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// reclaimer returns the heap's memory to the OS when enough of it is
// reclaimable. Used by one goroutine.
type reclaimer struct {
	free func() // debug.FreeOSMemory
	// read returns the live heap after the last GC, what the heap holds
	// (objects, dead or alive, plus unused and free pages not returned to
	// the OS) and whether the runtime has finished a collection
	// (readHeap; a seam for the tests).
	read func() (live, held uint64, collected bool)
	// floor is what the heap held right after the last free: memory a
	// collection cannot give back (fragmentation, pooled buffers) must
	// not make every check collect again.
	floor uint64
	// last is what the heap held at the previous check; settled is set
	// once a quiet check has returned what was left.
	last    uint64
	settled bool
}

func newReclaimer(free func()) *reclaimer {
	return &reclaimer{free: free, read: readHeap(), settled: true}
}

// check frees the heap's reclaimable memory when it exceeds reclaimSlack
// (work is going on), or, at the first check that finds the heap quiet
// (grown by less than quietGrowth since the previous one) after some
// work, whatever is left. It reports whether it freed.
func (r *reclaimer) check() bool {
	live, held, collected := r.read()
	quiet := held < r.last+quietGrowth
	r.last = held
	switch {
	case held > max(live, r.floor)+slack(reclaimSlack, collected):
		r.settled = false
	case quiet && !r.settled && held > max(live, r.floor)+slack(quietGrowth, collected):
		r.settled = true
	default:
		if !quiet {
			r.settled = false
		}
		return false
	}
	r.reclaim()
	return true
}

// checkBusy is the check made when work just ended: it frees only when
// the reclaimable memory exceeds reclaimSlack, and leaves the quiet
// detection of the periodic check to it. It reports whether it freed.
func (r *reclaimer) checkBusy() bool {
	live, held, collected := r.read()
	if held <= max(live, r.floor)+slack(busySlack, collected) {
		return false
	}
	r.settled = false
	r.reclaim()
	return true
}

// slack is the reclaimable memory that makes a check free: s once the
// runtime has collected, firstSlack before.
func slack(s uint64, collected bool) uint64 {
	if !collected {
		return firstSlack
	}
	return s
}

// reclaim frees and takes what the heap still holds as the new floor.
func (r *reclaimer) reclaim() {
	r.free()
	_, r.floor, _ = r.read()
	r.last = r.floor
}

// readHeap returns the reclaimer's reading of the runtime's metrics
// (heapSamples), with its own samples.
func readHeap() func() (live, held uint64, collected bool) {
	samples := make([]metrics.Sample, len(heapSamples))
	for i, n := range heapSamples {
		samples[i].Name = n
	}
	return func() (live, held uint64, collected bool) {
		metrics.Read(samples)
		var v [5]uint64
		for i, s := range samples {
			if s.Value.Kind() == metrics.KindUint64 {
				v[i] = s.Value.Uint64()
			}
		}
		return v[1], v[2] + v[3] + v[4], v[0] > 0
	}
}
