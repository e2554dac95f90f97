package suite

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/report"
)

// UpgradeResult is the pause of an upgrade in place (docs/upgrade.md) for
// pods of idle containers: how long a call that arrives as the upgrade
// begins waits, from the old process no longer accepting to the new one
// serving, as the daemon reports it; and how long the whole `gomon
// upgrade` command took (quiesce, dry run, exec, start-up, answer).
type UpgradeResult struct {
	Reps int
	// PerPod are the scenarios' container counts; PauseMs and CommandMs
	// are their samples (ms), one per upgrade, by count.
	PerPod    []int
	PauseMs   map[int][]float64
	CommandMs map[int][]float64
}

// upgradeTargetMs is issue 18's aim for the pause of a 10-container pod.
const upgradeTargetMs = 50

// upgradePause upgrades one gomon pod per scenario UpgradeReps times in a
// row, each time to the same binary (the daemon's start path: the
// mechanism is what is timed, not a new binary's own start-up).
func (h *harness) upgradePause(ctx context.Context, res *Results) error {
	p := h.cfg.Params
	if p.UpgradeReps <= 0 {
		return nil
	}
	r := &UpgradeResult{Reps: p.UpgradeReps, PauseMs: map[int][]float64{}, CommandMs: map[int][]float64{}}
	res.Upgrade = r
	for _, n := range p.UpgradeContainers {
		r.PerPod = append(r.PerPod, n)
		pod, err := h.newPod(ctx, h.gomon)
		if err != nil {
			return err
		}
		rd, ok := pod.(interface{ RunDir() string })
		if !ok {
			return fmt.Errorf("the gomon pod has no run directory")
		}
		for range n {
			if _, err := h.runningSleeper(ctx, h.gomon, pod); err != nil {
				return fmt.Errorf("%d containers: %w", n, err)
			}
		}
		for rep := range p.UpgradeReps {
			pause, took, err := h.upgradeOnce(ctx, rd.RunDir())
			if err != nil {
				return fmt.Errorf("%d containers, upgrade %d: %w", n, rep, err)
			}
			r.PauseMs[n] = append(r.PauseMs[n], ms(pause))
			r.CommandMs[n] = append(r.CommandMs[n], ms(took))
			h.log.Info("upgrade", "containers", n, "pause", pause, "command", took)
		}
		if err := h.closePods(ctx); err != nil {
			return err
		}
	}
	return nil
}

// upgradeOnce runs `gomon upgrade --runtime-dir dir` and returns the
// pause the daemon reported and how long the command took.
func (h *harness) upgradeOnce(ctx context.Context, dir string) (pause, took time.Duration, err error) {
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(cctx, h.env.Gomon, "upgrade", "--runtime-dir", dir).CombinedOutput()
	took = time.Since(start)
	line := strings.TrimSpace(string(out))
	if err != nil {
		return 0, 0, fmt.Errorf("gomon upgrade: %w: %s", err, line)
	}
	// "<dir>: pid N: upgraded A -> B, paused 9.7ms, 2 container(s) taken over"
	_, rest, ok := strings.Cut(line, ", paused ")
	if !ok {
		return 0, 0, fmt.Errorf("no pause in %q", line)
	}
	pause, err = time.ParseDuration(strings.TrimSuffix(strings.Fields(rest)[0], ","))
	if err != nil {
		return 0, 0, fmt.Errorf("pause in %q: %w", line, err)
	}
	return pause, took, nil
}

func (r *Results) upgradeSection() report.Section {
	u := r.Upgrade
	s := report.Section{
		Title:   "8. Upgrade in place: how long calls wait (ms)",
		Columns: []string{"idle containers in the pod", "pause, median", "min", "max", "`gomon upgrade` command, median", "target", "verdict"},
	}
	for _, n := range u.PerPod {
		xs := u.PauseMs[n]
		var t *target
		if n == 10 {
			t = atMost(upgradeTargetMs, fmt.Sprintf("≤ %d ms", upgradeTargetMs))
		}
		lo, hi := minMax(xs)
		s.Rows = append(s.Rows, []string{fmt.Sprint(n), num(med(xs)), num(lo), num(hi), num(med(u.CommandMs[n])), t.label(), t.verdict(med(xs))})
	}
	s.Notes = []string{
		fmt.Sprintf("One gomon pod per row, its containers idle (`sleep`), upgraded %d times in a row with `gomon upgrade --runtime-dir` to its own binary. "+
			"The pause is what the daemon reports: from the old process no longer accepting calls (they wait in the socket's backlog or at the gate) to the new one serving, "+
			"so a call that arrives as the upgrade begins waits about that long; it includes the dry run of the new binary and its start-up. "+
			"The command's time adds the quiesce, the control socket and the answer. Tracing off. Target: issue 18, under 50 ms for 10 containers.", u.Reps),
	}
	return s
}

// minMax returns the smallest and largest of xs, NaN for none.
func minMax(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return med(nil), med(nil)
	}
	lo, hi = xs[0], xs[0]
	for _, x := range xs[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}
