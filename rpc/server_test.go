package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
	"github.com/gomon-dev/gomon/rpc/protov0"
)

// recorder is a Backend that records requests. If gate is set, creates
// block until it is closed.
type recorder struct {
	mu      sync.Mutex
	creates []monitor.CreateRequest
	gate    chan struct{}
	started chan struct{}
	err     error
}

func (r *recorder) CreateContainer(ctx context.Context, req monitor.CreateRequest) (uint32, error) {
	r.mu.Lock()
	r.creates = append(r.creates, req)
	r.mu.Unlock()
	if r.started != nil {
		r.started <- struct{}{}
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if r.err != nil {
		return 0, r.err
	}
	return 4242, nil
}

func (r *recorder) ExecSync(ctx context.Context, req monitor.ExecSyncRequest) (monitor.ExecSyncResult, error) {
	return monitor.ExecSyncResult{ExitCode: 3, Stdout: []byte("out"), Stderr: []byte("err"), TimedOut: true}, nil
}

func (r *recorder) Attach(ctx context.Context, req monitor.AttachRequest) error { return r.err }
func (r *recorder) ReopenLog(ctx context.Context, id string) error              { return r.err }
func (r *recorder) StartFdSocket(ctx context.Context) (string, error)           { return "/run/fd.sock", r.err }
func (r *recorder) CreateNamespaces(ctx context.Context, req monitor.NamespacesRequest) ([]monitor.NamespacePath, error) {
	return []monitor.NamespacePath{{Type: monitor.NamespaceIPC, Path: "/b/ipcns/" + req.PodID}, {Type: monitor.NamespaceNet, Path: "/b/netns/" + req.PodID}}, r.err
}
func (r *recorder) SetWindowSize(ctx context.Context, id string, w, h uint16) error {
	return r.err
}
func (r *recorder) ServeExec(ctx context.Context, req monitor.ServeExecRequest) (string, error) {
	return "http://127.0.0.1:1/exec/" + req.ID, r.err
}
func (r *recorder) ServeAttach(ctx context.Context, req monitor.ServeAttachRequest) (string, error) {
	return "http://127.0.0.1:1/attach/" + req.ID, r.err
}
func (r *recorder) ServePortForward(ctx context.Context, netNsPath string) (string, error) {
	return "http://127.0.0.1:1/port-forward" + netNsPath, r.err
}

var testInfo = VersionInfo{
	Version: "0.5.0", Tag: "none", Commit: "abc", BuildDate: "2026-11-26 00:00:00", Target: "linux/amd64",
	RustVersion: "go1.26", CargoVersion: "gomon (devel)", CargoTree: "dep v1",
}

// serve starts a Server on a unix socket and returns a dial function.
func serve(t *testing.T, b Backend) func() *capnprpc.Conn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "conmon.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	s := NewServer(b, testInfo, nil)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		must(t, s.Close())
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return func() *capnprpc.Conn {
		c, err := net.Dial("unix", sock)
		must(t, err)
		conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
}

func TestVersion(t *testing.T) {
	dial := serve(t, &recorder{})
	ctx := context.Background()
	client := proto.Conmon(dial().Bootstrap(ctx))
	for _, verbose := range []bool{false, true} {
		t.Run(fmt.Sprintf("verbose=%v", verbose), func(t *testing.T) {
			f, rel := client.Version(ctx, func(p proto.Conmon_version_Params) error {
				r, err := p.NewRequest()
				r.SetVerbose(verbose)
				return err
			})
			defer rel()
			res, err := f.Struct()
			must(t, err)
			resp, err := res.Response()
			must(t, err)
			if got := resp.ProcessId(); got != uint32(os.Getpid()) {
				t.Errorf("processId %d, want %d", got, os.Getpid())
			}
			v, _ := resp.Version()
			rv, _ := resp.RustVersion()
			tree, _ := resp.CargoTree()
			if v != "0.5.0" || rv != "go1.26" {
				t.Errorf("version %q rust %q", v, rv)
			}
			if (tree != "") != verbose {
				t.Errorf("cargoTree %q with verbose=%v", tree, verbose)
			}
		})
	}
}

func TestCreateBothGenerationsOverTheWire(t *testing.T) {
	rec := &recorder{}
	dial := serve(t, rec)
	ctx := context.Background()
	conn := dial()

	v1 := proto.Conmon(conn.Bootstrap(ctx))
	f1, rel1 := v1.CreateContainer(ctx, func(p proto.Conmon_createContainer_Params) error {
		r, err := p.NewRequest()
		must(t, err)
		must(t, r.SetId("new"))
		must(t, r.SetEnvVars(mapList(t, r.Segment(), map[string]string{"GEN": "1"})))
		must(t, r.SetLeakFds(u64List(t, r.Segment(), 9)))
		return nil
	})
	defer rel1()
	res1, err := f1.Struct()
	must(t, err)
	resp1, _ := res1.Response()
	if resp1.ContainerPid() != 4242 {
		t.Errorf("pid %d", resp1.ContainerPid())
	}

	v0 := protov0.Conmon(conn.Bootstrap(ctx))
	f0, rel0 := v0.CreateContainer(ctx, func(p protov0.Conmon_createContainer_Params) error {
		r, err := p.NewRequest()
		must(t, err)
		must(t, r.SetId("old"))
		must(t, r.SetMetadataOld([]byte(`{"traceparent":"x"}`)))
		must(t, r.SetEnvVars(v0MapList(t, r.Segment(), map[string]string{"GEN": "0"})))
		must(t, r.SetLeakFds(u64List(t, r.Segment(), 8)))
		return nil
	})
	defer rel0()
	_, err = f0.Struct()
	must(t, err)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.creates) != 2 {
		t.Fatalf("%d creates recorded", len(rec.creates))
	}
	for i, want := range []struct {
		id, gen string
		leak    uint64
	}{{"new", "1", 9}, {"old", "0", 8}} {
		got := rec.creates[i]
		if got.ID != want.id || got.Env["GEN"] != want.gen || len(got.LeakFDs) != 1 || got.LeakFDs[0] != want.leak {
			t.Errorf("create %d decoded as %+v", i, got)
		}
	}
}

// Invariant: a waiting handler never stalls the connection.
func TestConcurrentCallsOnOneConnection(t *testing.T) {
	const n = 10
	rec := &recorder{gate: make(chan struct{}), started: make(chan struct{}, n)}
	dial := serve(t, rec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := proto.Conmon(dial().Bootstrap(ctx))

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			f, rel := client.CreateContainer(ctx, func(p proto.Conmon_createContainer_Params) error {
				r, err := p.NewRequest()
				if err != nil {
					return err
				}
				return r.SetId(fmt.Sprint("c", i))
			})
			defer rel()
			_, err := f.Struct()
			errs <- err
		})
	}
	for range n {
		select {
		case <-rec.started:
		case <-ctx.Done():
			t.Fatal("creates did not all reach the backend while others were blocked")
		}
	}
	// All n creates are blocked in the backend; version still answers.
	f, rel := client.Version(ctx, nil)
	_, err := f.Struct()
	rel()
	must(t, err)

	close(rec.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
}

func TestErrorsReachTheClient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"not found", fmt.Errorf("reopen log: %w", monitor.ErrNotFound), "child not available"},
		{"runtime text", errors.New("child command exited with: 1: exec: \"nope\": executable file not found in $PATH"), "not found in $PATH"},
		{"not implemented", monitor.ErrNotImplemented, "not implemented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dial := serve(t, &recorder{err: tt.err})
			ctx := context.Background()
			client := proto.Conmon(dial().Bootstrap(ctx))
			f, rel := client.CreateContainer(ctx, nil)
			defer rel()
			_, err := f.Struct()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", err, tt.want)
			}
			// The connection survives a failed call.
			fv, relv := client.Version(ctx, nil)
			defer relv()
			if _, err := fv.Struct(); err != nil {
				t.Fatalf("version after failed call: %v", err)
			}
		})
	}
}

func TestServePortForwardAnswersURL(t *testing.T) {
	dial := serve(t, &recorder{})
	ctx := context.Background()
	client := proto.Conmon(dial().Bootstrap(ctx))
	f, rel := client.ServePortForwardContainer(ctx, func(p proto.Conmon_servePortForwardContainer_Params) error {
		req, err := p.NewRequest()
		if err != nil {
			return err
		}
		return req.SetNetNsPath("/var/run/netns/x")
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("ServePortForwardContainer: %v", err)
	}
	resp, err := res.Response()
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	if url, _ := resp.Url(); url != "http://127.0.0.1:1/port-forward/var/run/netns/x" {
		t.Fatalf("url = %q", url)
	}
}

func TestPodServicesOverTheWire(t *testing.T) {
	dial := serve(t, &recorder{})
	ctx := context.Background()
	client := proto.Conmon(dial().Bootstrap(ctx))

	f, rel := client.StartFdSocket(ctx, nil)
	defer rel()
	res, err := f.Struct()
	must(t, err)
	resp, _ := res.Response()
	if p, _ := resp.Path(); p != "/run/fd.sock" {
		t.Errorf("fd socket path %q", p)
	}

	fn, reln := client.CreateNamespaces(ctx, func(p proto.Conmon_createNamespaces_Params) error {
		r, err := p.NewRequest()
		must(t, err)
		return r.SetPodId("pod")
	})
	defer reln()
	nres, err := fn.Struct()
	must(t, err)
	nresp, _ := nres.Response()
	l, _ := nresp.Namespaces()
	if l.Len() != 2 || l.At(1).Type() != proto.Conmon_Namespace_net {
		t.Fatalf("namespaces %v", l)
	}
	if p, _ := l.At(1).Path(); p != "/b/netns/pod" {
		t.Errorf("net path %q", p)
	}
}

func TestManyConnections(t *testing.T) {
	dial := serve(t, &recorder{})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 20 {
		conn := dial()
		wg.Go(func() {
			f, rel := proto.Conmon(conn.Bootstrap(ctx)).Version(ctx, nil)
			defer rel()
			if _, err := f.Struct(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
