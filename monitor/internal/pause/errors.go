package pause

import "errors"

// Error classes of Create; test with errors.Is.
var (
	// ErrNoPodID: Options.PodID is empty. The text is conmon-rs's, which
	// clients match on.
	ErrNoPodID = errors.New("no pod ID provided")
	// ErrInvalidArgument: an option is malformed (a pod ID that is not a
	// single path element, an ID mapping that is not "C H S", a user
	// namespace without mappings, no reaper).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrInUse: a namespace file for this pod ID is already mounted.
	ErrInUse = errors.New("namespace file already in use")
	// ErrPauseExited: the pause process exited before it was ready.
	ErrPauseExited = errors.New("pause process exited early")
)
