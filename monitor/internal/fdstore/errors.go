package fdstore

import (
	"errors"
	"strconv"
)

// ErrNoFD is the class of errors returned by [Server.Take] for an empty
// slot; test for it with errors.Is.
var ErrNoFD = errors.New("no file descriptor in slot")

// slotError reports an empty slot with conmon-rs's words,
// "no file descriptor in slot N".
type slotError struct{ slot uint64 }

func (e *slotError) Error() string {
	return ErrNoFD.Error() + " " + strconv.FormatUint(e.slot, 10)
}

func (e *slotError) Unwrap() error { return ErrNoFD }
