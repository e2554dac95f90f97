package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// memory measures the idle memory of the monitor processes for each
// scenario: every container runs `sleep 3600`, and the figures are read
// after Params.Idle of quiet. gomon is one daemon per pod; conmon one
// process per container (summed). Bare runc has no monitor.
func (h *harness) memory(ctx context.Context, res *Results) error {
	drivers := []driver.Driver{h.gomon, h.conmon}
	for i, s := range h.cfg.Params.MemScenario {
		r := MemoryResult{Scenario: s, Mem: map[string]procfs.Memory{}, Procs: map[string]int{}, MaxPodRSS: map[string]int64{}}
		for _, k := range rotation(len(drivers), i) {
			d := drivers[k]
			m, n, maxPod, err := h.idleMemory(ctx, d, s)
			if err != nil {
				return fmt.Errorf("%s %s: %w", d.Name(), s, err)
			}
			r.Mem[d.Name()], r.Procs[d.Name()], r.MaxPodRSS[d.Name()] = m, n, maxPod
			h.log.Info("idle memory", "monitor", d.Name(), "scenario", s.String(), "rss_kib", m.RSS, "pss_kib", m.PSS, "uss_kib", m.USS, "procs", n)
		}
		res.Memory = append(res.Memory, r)
	}
	return nil
}

// idleMemory starts s's pods and containers, idles, sums the monitors'
// memory, and tears everything down. maxPod is the largest VmRSS (KiB) of
// one pod's monitor processes.
func (h *harness) idleMemory(ctx context.Context, d driver.Driver, s Scenario) (sum procfs.Memory, n int, maxPod int64, err error) {
	var pods []driver.Pod
	defer func() { _ = h.closePods(ctx) }() // errors surface in the final cleanup
	for range s.Pods {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return procfs.Memory{}, 0, 0, err
		}
		pods = append(pods, p)
		for range s.PerPod {
			c, err := h.newContainer(d, sleeper...)
			if err != nil {
				return procfs.Memory{}, 0, 0, err
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = p.Create(cctx, c)
			if err == nil {
				err = h.startRunning(cctx, c)
			}
			cancel()
			if err != nil {
				return procfs.Memory{}, 0, 0, err
			}
		}
	}
	select {
	case <-ctx.Done():
		return procfs.Memory{}, 0, 0, ctx.Err()
	case <-time.After(h.cfg.Params.Idle):
	}
	for _, p := range pods {
		var pod int64
		for _, pid := range p.MonitorPIDs() {
			m, err := procfs.ReadMemory(pid)
			if err != nil {
				return procfs.Memory{}, 0, 0, err
			}
			sum = sum.Add(m)
			pod += m.RSS
			n++
		}
		maxPod = max(maxPod, pod)
	}
	if err := h.closePods(ctx); err != nil {
		return procfs.Memory{}, 0, 0, err
	}
	return sum, n, maxPod, nil
}
