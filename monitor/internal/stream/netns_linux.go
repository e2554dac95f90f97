package stream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/contain"
)

// dialInNetNS connects to 127.0.0.1:port inside the network namespace at
// nsPath. The socket is created by a goroutine locked to its OS thread
// while that thread is in the namespace (a socket stays in the namespace
// it was created in); the thread then returns to its original namespace.
// If it cannot return, the goroutine exits still locked, so the Go runtime
// retires the thread instead of reusing it in the wrong namespace.
//
// An empty nsPath dials in gomon's own namespace (a host-network pod).
// A panic while dialling is recovered, logged on log and returned as the
// error; the goroutine then exits locked, as it cannot know where its
// thread is.
func dialInNetNS(ctx context.Context, nsPath string, port int, log *slog.Logger) (*net.TCPConn, error) {
	if nsPath == "" {
		ctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("dial pod port: %w", err)
		}
		return conn.(*net.TCPConn), nil
	}
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	defer func() { _ = target.Close() }() // only needed for setns
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()

	type result struct {
		conn net.Conn
		err  error
	}
	res := make(chan result, 1)
	go func() {
		defer contain.Recover(log, contain.Stream, func(p *contain.PanicError) { res <- result{nil, p} })
		runtime.LockOSThread()
		conn, restored, err := dialLocked(ctx, int(target.Fd()), port)
		if restored {
			runtime.UnlockOSThread()
		} // else: exit locked; the runtime terminates the thread
		res <- result{conn, err}
	}()
	r := <-res
	if r.err != nil {
		return nil, r.err
	}
	tc, ok := r.conn.(*net.TCPConn)
	if !ok {
		_ = r.conn.Close()
		return nil, fmt.Errorf("dial pod port: unexpected connection %T", r.conn)
	}
	return tc, nil
}

// dialLocked does the namespace switch on the current (locked) thread.
// restored reports whether the thread is back in its own namespace.
func dialLocked(ctx context.Context, target, port int) (conn net.Conn, restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("open own network namespace: %w", err)
	}
	defer func() { _ = orig.Close() }()
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("enter network namespace: %w", err)
	}
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		err = fmt.Errorf("dial pod port: %w", err)
	}
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, false, fmt.Errorf("return to own network namespace: %w", serr)
	}
	return conn, true, err
}
