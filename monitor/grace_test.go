package monitor

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestWithGrace pins the exec runtime's grace: it outlives its caller by
// exactly the grace, keeps the caller's cause, and stop ends it at once.
func TestWithGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		errGone := errors.New("client gone")
		ctx, cancel := context.WithCancelCause(context.Background())
		gctx, stop := withGrace(ctx, 5*time.Second)
		defer stop()
		cancel(errGone)
		time.Sleep(5*time.Second - time.Nanosecond)
		synctest.Wait()
		if gctx.Err() != nil {
			t.Fatalf("ended %v into a 5s grace", 5*time.Second-time.Nanosecond)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !errors.Is(context.Cause(gctx), errGone) {
			t.Fatalf("after the grace: cause %v, want %v", context.Cause(gctx), errGone)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		gctx, stop := withGrace(context.Background(), time.Hour)
		if gctx.Err() != nil {
			t.Fatal("ended before its parent did")
		}
		stop()
		if gctx.Err() == nil {
			t.Fatal("stop did not end it")
		}
	})
}
