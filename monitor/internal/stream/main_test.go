package stream

import (
	"testing"

	"go.uber.org/goleak"
)

// Every session, connection and server goroutine ends with its test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
