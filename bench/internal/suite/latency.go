package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
)

// sleeper is the command of every idle container.
var sleeper = []string{"/bin/sleep", "3600"}

// latency measures create-to-running: from asking the monitor to create
// until `runc state` says running after `runc start` (bare: runc create +
// start). One pod per contender; gomon's daemon is already running, as it
// is when CRI-O creates a pod's containers.
func (h *harness) latency(ctx context.Context, res *Results) error {
	res.Latency, res.LatencyCreate = map[string][]float64{}, map[string][]float64{}
	return h.latencyInto(ctx, []driver.Driver{h.gomon, h.conmon, h.bare}, h.cfg.Params.LatencyReps, res.Latency, res.LatencyCreate)
}

// latencyInto runs reps interleaved rounds (plus one warm-up) over drivers.
func (h *harness) latencyInto(ctx context.Context, drivers []driver.Driver, reps int, total, create map[string][]float64) error {
	pods := make([]driver.Pod, len(drivers))
	for i, d := range drivers {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return err
		}
		pods[i] = p
	}
	for rep := -1; rep < reps; rep++ {
		for _, i := range rotation(len(drivers), rep) {
			d := drivers[i]
			t, c, err := h.createToRunning(ctx, d, pods[i])
			if err != nil {
				return fmt.Errorf("%s rep %d: %w", d.Name(), rep, err)
			}
			if rep >= 0 { // rep -1 warms caches up
				total[d.Name()] = append(total[d.Name()], ms(t))
				if create != nil {
					create[d.Name()] = append(create[d.Name()], ms(c))
				}
			}
		}
	}
	return nil
}

// createToRunning times one container and removes it again.
func (h *harness) createToRunning(ctx context.Context, d driver.Driver, p driver.Pod) (total, create time.Duration, err error) {
	c, err := h.newContainer(d, sleeper...)
	if err != nil {
		return 0, 0, err
	}
	defer h.dropContainer(c)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := p.Create(ctx, c); err != nil {
		return 0, 0, err
	}
	create = time.Since(t0)
	if err := h.startRunning(ctx, c); err != nil {
		_ = p.Remove(ctx, c) // best effort; the error above matters
		return 0, 0, err
	}
	total = time.Since(t0)
	if err := p.Remove(ctx, c); err != nil {
		return 0, 0, err
	}
	return total, create, nil
}

// ms converts to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
