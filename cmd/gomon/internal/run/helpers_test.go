package run

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The helpers monitor's own tests use too.
var (
	testLogger = monitortest.Logger
	parseLog   = monitortest.ParseLog
	waitFor    = monitortest.WaitFor
)

type syncBuffer = monitortest.SyncBuffer
