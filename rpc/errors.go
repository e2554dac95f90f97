package rpc

import (
	"errors"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/gomon-dev/gomon/monitor"
)

// errDecode marks a request the adapter could not read.
var errDecode = errors.New("decode request")

// toException turns an error from the monitor into the Cap'n Proto
// exception the client sees. It is the only place that classifies errors
// for the wire. The reason is the whole error chain ("a: b: c"), as in
// conmon-rs, because CRI-O and its tests match on the runtime's own words
// (e.g. "not found in $PATH") and on "child not available".
func toException(err error) error {
	if err == nil {
		return nil
	}
	typ := exc.Failed
	if errors.Is(err, monitor.ErrNotImplemented) {
		typ = exc.Unimplemented
	}
	return &exc.Exception{Type: typ, Cause: err}
}
