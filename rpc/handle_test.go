package rpc

import (
	"context"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
)

// gated is a Backend whose every method reports its name on started and
// then blocks until gate is closed.
type gated struct {
	started chan string
	gate    chan struct{}
}

func (g *gated) wait(ctx context.Context, name string) error {
	g.started <- name
	select {
	case <-g.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gated) CreateContainer(ctx context.Context, _ monitor.CreateRequest) (uint32, error) {
	return 1, g.wait(ctx, "create_container")
}

func (g *gated) ExecSync(ctx context.Context, _ monitor.ExecSyncRequest) (monitor.ExecSyncResult, error) {
	return monitor.ExecSyncResult{}, g.wait(ctx, "exec_sync_container")
}

func (g *gated) Attach(ctx context.Context, _ monitor.AttachRequest) error {
	return g.wait(ctx, "attach_container")
}

func (g *gated) ReopenLog(ctx context.Context, _ string) error {
	return g.wait(ctx, "reopen_log_container")
}

func (g *gated) SetWindowSize(ctx context.Context, _ string, _, _ uint16) error {
	return g.wait(ctx, "set_window_size_container")
}

func (g *gated) CreateNamespaces(ctx context.Context, _ monitor.NamespacesRequest) ([]monitor.NamespacePath, error) {
	return nil, g.wait(ctx, "create_namespaces")
}

func (g *gated) StartFdSocket(ctx context.Context) (string, error) {
	return "", g.wait(ctx, "start_fd_socket")
}

func (g *gated) ServeExec(ctx context.Context, _ monitor.ServeExecRequest) (string, error) {
	return "", g.wait(ctx, "serve_exec_container")
}

func (g *gated) ServeAttach(ctx context.Context, _ monitor.ServeAttachRequest) (string, error) {
	return "", g.wait(ctx, "serve_attach_container")
}

func (g *gated) ServePortForward(ctx context.Context, _ string) (string, error) {
	return "", g.wait(ctx, "serve_port_forward_container")
}

// Every method that can wait releases the connection before it calls the
// backend: with one call of each blocked in the backend on the same
// connection, every one of them still reaches it, and version answers.
// A method that forgot call.Go() would hold back the calls after it.
func TestEveryWaitingMethodReleasesTheConnection(t *testing.T) {
	g := &gated{started: make(chan string, 16), gate: make(chan struct{})}
	dial := serve(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := proto.Conmon(dial().Bootstrap(ctx))

	// Each call is sent at once; pending collects how to await its answer.
	var pending []func() error
	var calls []func()
	add := func(send func() (func() error, capnp.ReleaseFunc)) {
		calls = append(calls, func() {
			done, rel := send()
			pending = append(pending, func() error { defer rel(); return done() })
		})
	}
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.CreateContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.ExecSyncContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.AttachContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.ReopenLogContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.CreateNamespaces(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.StartFdSocket(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.ServeExecContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.ServeAttachContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	add(func() (func() error, capnp.ReleaseFunc) {
		f, rel := client.ServePortForwardContainer(ctx, nil)
		return func() error { _, err := f.Struct(); return err }, rel
	})
	for _, c := range calls {
		c()
	}
	seen := map[string]bool{}
	for range calls {
		select {
		case name := <-g.started:
			seen[name] = true
		case <-ctx.Done():
			t.Fatalf("only %v reached the backend: a method before the missing ones holds the connection", seen)
		}
	}
	f, rel := client.Version(ctx, nil)
	_, err := f.Struct()
	rel()
	must(t, err)

	close(g.gate)
	for _, p := range pending {
		must(t, p())
	}
}
