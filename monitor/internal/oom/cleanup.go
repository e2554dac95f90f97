package oom

// cleanup collects undo steps of a multi-step setup; run undoes them in
// reverse order unless release was called first.
type cleanup struct {
	steps []func()
}

func (c *cleanup) add(f func()) { c.steps = append(c.steps, f) }

// release keeps everything set up so far.
func (c *cleanup) release() { c.steps = nil }

func (c *cleanup) run() {
	for i := len(c.steps) - 1; i >= 0; i-- {
		c.steps[i]()
	}
	c.steps = nil
}
