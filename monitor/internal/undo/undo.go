// Package undo holds the undo stack of a multi-step setup, shared by the
// engine and its internal packages.
package undo

// Stack collects undo steps of a multi-step setup; Run undoes them in
// reverse order unless Release was called first. Registering each step as
// soon as its resource exists means a failure at any later step releases
// exactly what was acquired (docs/architecture.md, "Undo steps"). The zero
// value is ready to use; a Stack is not safe for concurrent use.
type Stack struct{ steps []func() }

// Add registers f to run on Run.
func (s *Stack) Add(f func()) { s.steps = append(s.steps, f) }

// Release keeps everything set up so far: Run then does nothing.
func (s *Stack) Release() { s.steps = nil }

// Run runs the registered steps, last first, and forgets them.
func (s *Stack) Run() {
	for i := len(s.steps) - 1; i >= 0; i-- {
		s.steps[i]()
	}
	s.steps = nil
}
