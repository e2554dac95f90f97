package daemon

import (
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"
)

// sink keeps the test's garbage from being optimised away.
var sink []byte

// settledReclaimer returns a reclaimer that counts its frees in *frees,
// settled on whatever the test binary left behind, and no free counted.
func settledReclaimer() (*reclaimer, *int) {
	debug.FreeOSMemory()
	frees := new(int)
	r := newReclaimer(func() { *frees++; debug.FreeOSMemory() })
	for range 3 {
		r.check()
	}
	*frees = 0
	return r, frees
}

// TestReclaimer: garbage beyond reclaimSlack is collected and returned
// once; a heap without it is left alone.
func TestReclaimer(t *testing.T) {
	r, frees := settledReclaimer()
	if r.check() {
		t.Fatal("collected a heap with nothing to give back")
	}
	for range 64 {
		sink = make([]byte, 64<<10) // 4 MiB of garbage, 64 KiB at a time
	}
	sink = nil
	if !r.check() || *frees != 1 {
		t.Fatalf("4 MiB of garbage not reclaimed (frees %d)", *frees)
	}
	if r.check() || *frees != 1 {
		t.Errorf("collected again right after a reclaim (frees %d)", *frees)
	}
	// Less than reclaimSlack while work goes on: kept, then returned at
	// the first quiet check, once.
	for range 8 {
		sink = make([]byte, 64<<10) // 512 KiB
	}
	sink = nil
	if r.check() || *frees != 1 {
		t.Fatalf("collected while the heap was growing by less than the slack (frees %d)", *frees)
	}
	if !r.check() || *frees != 2 {
		t.Fatalf("not collected once quiet (frees %d)", *frees)
	}
	for range 2 {
		if r.check() || *frees != 2 {
			t.Errorf("collected again while quiet (frees %d)", *frees)
		}
	}
}

func TestTuneRuntimeGOMAXPROCS(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })

	runtime.GOMAXPROCS(maxProcs + 1)
	tuneRuntime(func(string) (string, bool) { return "", false }).Stop()
	if got := runtime.GOMAXPROCS(0); got != maxProcs {
		t.Errorf("GOMAXPROCS = %d, want the cap %d", got, maxProcs)
	}

	runtime.GOMAXPROCS(maxProcs + 1)
	tuneRuntime(func(k string) (string, bool) { return "3", k == "GOMAXPROCS" }).Stop()
	if got := runtime.GOMAXPROCS(0); got != maxProcs+1 {
		t.Errorf("GOMAXPROCS = %d with GOMAXPROCS set, want it untouched (%d)", got, maxProcs+1)
	}
}

// TestReclaimerBusyCheck: the check made when a call ends frees only
// past busySlack, and leaves a smaller remainder to the quiet check.
func TestReclaimerBusyCheck(t *testing.T) {
	r, frees := settledReclaimer()
	for range busySlack / (64 << 10) / 2 {
		sink = make([]byte, 64<<10) // half the slack
	}
	sink = nil
	if r.checkBusy() || *frees != 0 {
		t.Fatalf("freed %d time(s) with less than the slack reclaimable", *frees)
	}
	for range 48 {
		sink = make([]byte, 64<<10) // 3 MiB more
	}
	sink = nil
	if !r.checkBusy() || *frees != 1 {
		t.Fatalf("3.5 MiB of garbage not reclaimed when a call ended (frees %d)", *frees)
	}
	if r.checkBusy() || *frees != 1 {
		t.Errorf("freed again right after a reclaim (frees %d)", *frees)
	}
}

// TestReclaimerBeforeFirstCollection: until the runtime has collected, the
// live heap reads 0, so a heap of start-up data would look reclaimable;
// neither check frees below firstSlack then, and the usual slacks apply
// once a collection has finished.
func TestReclaimerBeforeFirstCollection(t *testing.T) {
	var live, held uint64
	collected := false
	frees := 0
	r := newReclaimer(func() { frees++ })
	r.read = func() (uint64, uint64, bool) { return live, held, collected }
	held = firstSlack - 1
	if r.checkBusy() || r.check() || r.check() || frees != 0 {
		t.Fatalf("freed %d time(s) below firstSlack before any collection", frees)
	}
	held = firstSlack + busySlack
	if !r.checkBusy() || frees != 1 {
		t.Fatalf("did not free past firstSlack before any collection (frees %d)", frees)
	}
	// Collected now, 1 MiB live: the busy slack is the bar again.
	collected, live, held = true, 1<<20, 1<<20+busySlack/2
	r.floor = 0
	if r.checkBusy() || frees != 1 {
		t.Fatalf("freed below busySlack after a collection (frees %d)", frees)
	}
	held = 1<<20 + 2*busySlack
	if !r.checkBusy() || frees != 2 {
		t.Fatalf("did not free past busySlack after a collection (frees %d)", frees)
	}
}

// TestTunerReleasesCode: the code pages are released when start-up is
// over, at the end of a period with calls or a collection in it, at the
// end of the quiet period after start-up or calls, and never twice in
// one quiet spell.
func TestTunerReleasesCode(t *testing.T) {
	// The test and the tuner's goroutine take turns (step waits until
	// each event is handled), so what both touch needs no lock.
	releases := 0
	tn := newTuner(func() { releases++ })
	var gcs uint64
	tn.gcCycles = func() uint64 { return gcs }
	handled := make(chan struct{})
	tn.handled = func() { handled <- struct{}{} }
	tick := make(chan time.Time)
	// A heap of 1 MiB, all of it live unless the test adds garbage;
	// freeing it is a collection.
	const live = 1 << 20
	held := uint64(live)
	r := newReclaimer(func() { held = live; gcs++ })
	r.read = func() (uint64, uint64, bool) { return live, held, true }
	r.floor, r.last = live, live
	go tn.run(r, tick)
	defer tn.Stop()

	var released []int // the ticks at which a release was made
	ticks := 0
	// Each step sends one event and waits until the goroutine has
	// handled it, so the test and the goroutine never run at once.
	step := func(send func()) {
		before := releases
		send()
		<-handled
		if releases != before {
			released = append(released, ticks)
		}
	}
	next := func() { ticks++; step(func() { tick <- time.Time{} }) }
	poke := func() { step(tn.Poke) }

	step(tn.Started)
	if !slices.Equal(released, []int{0}) {
		t.Fatalf("released at %v, want once when started", released)
	}
	released = nil
	next() // 1: the quiet period after start-up: released once more
	next() // 2: quiet
	poke()
	poke()
	next() // 3: calls in this period: released
	next() // 4: the quiet period after them: released once more
	next() // 5: quiet
	gcs++  // the runtime's own collection
	next() // 6: released
	next() // 7: quiet
	held = live + 2*busySlack
	poke() // still 7: the reclaimer collects after a call; no release yet
	next() // 8: a call and a collection in this period: released
	next() // 9: quiet after it: released
	poke()
	next() // 10: a call: released
	poke()
	next() // 11: another: released
	next() // 12: quiet after them: released
	next() // 13: quiet
	if want := []int{1, 3, 4, 6, 8, 9, 10, 11, 12}; !slices.Equal(released, want) {
		t.Errorf("released at ticks %v after start-up, want %v", released, want)
	}
	if held != live {
		t.Errorf("the reclaimer did not collect the garbage (held %d)", held)
	}
}
