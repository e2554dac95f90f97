package interop

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
)

// podPort is where the echo server listens inside the pod's namespace.
const podPort = 8080

// echoPod starts a container with its own network namespace running a
// persistent busybox echo server on podPort, brings the namespace's
// loopback up and returns the namespace path.
func echoPod(t *testing.T, s *gomonServer) string {
	t.Helper()
	c := runningContainer(t, s, []string{"nc", "-ll", "-p", strconv.Itoa(podPort), "-e", "cat"}, nil, nil)
	ns := fmt.Sprintf("/proc/%d/ns/net", c.pid)
	// runc's default spec has a network namespace whose lo is down.
	if out, err := exec.Command("nsenter", "--net="+ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("bring lo up in %s: %v: %s", ns, err, out)
	}
	waitListening(t, ns, podPort)
	return ns
}

// forward starts client-go's port forwarder over WebSocket (kubectl ≥ 1.30)
// to pod port remote and returns the local port and a stop func that
// returns ForwardPorts' error.
func forward(t *testing.T, sessionURL string, remote int) (int, func() error) {
	t.Helper()
	u, err := url.Parse(sessionURL)
	if err != nil {
		t.Fatal(err)
	}
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{})
	if err != nil {
		t.Fatalf("NewSPDYOverWebsocketDialer: %v", err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", remote)},
		stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("portforward.New: %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("ForwardPorts: %v", err)
	case <-time.After(hangGuard):
		t.Fatalf("port forwarder not ready within %v", hangGuard)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		t.Fatalf("GetPorts: %v %v", ports, err)
	}
	var once sync.Once
	var result error
	stopFn := func() error {
		once.Do(func() {
			close(stop)
			select {
			case result = <-errc:
			case <-time.After(hangGuard):
				result = fmt.Errorf("ForwardPorts did not return within %v", hangGuard)
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stopFn() })
	return int(ports[0].Local), stopFn
}

// servePortForward asks gomon for a port-forward session URL.
func servePortForward(t *testing.T, s *gomonServer, ns string) string {
	t.Helper()
	res, err := s.client.ServePortForwardContainer(t.Context(), &client.ServePortForwardContainerConfig{NetNsPath: ns})
	if err != nil {
		t.Fatalf("ServePortForwardContainer: %v", err)
	}
	checkLoopbackURL(t, res.URL, "port-forward")
	return res.URL
}

// TestServePortForward forwards connections with client-go's SPDY over
// WebSocket dialer into a pod network namespace: several connections at
// once, data both ways, and a failed dial reported to the client.
func TestServePortForward(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	ns := echoPod(t, s)

	t.Run("several connections both ways", func(t *testing.T) {
		local, stop := forward(t, servePortForward(t, s, ns), podPort)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Go(func() {
				c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
				if err != nil {
					errs <- err
					return
				}
				defer func() { _ = c.Close() }()
				for j := range 3 {
					msg := fmt.Sprintf("conn %d message %d %s\n", i, j, string(make([]byte, 100*i)))
					got, err := echoOnce(c, msg)
					if err != nil || got != msg {
						errs <- fmt.Errorf("connection %d: echo %q, got %q: %w", i, msg, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := stop(); err != nil {
			t.Errorf("ForwardPorts: %v", err)
		}
	})

	t.Run("the pod closes first", func(t *testing.T) {
		// A second server in the same namespace that writes a line and
		// closes each connection.
		runningContainer(t, s, []string{"nc", "-ll", "-p", "9091", "-e", "echo", "from-pod"}, inNetNS(ns), nil)
		waitListening(t, ns, 9091)
		local, stop := forward(t, servePortForward(t, s, ns), 9091)
		for i := range 3 {
			conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(hangGuard))
			got, err := io.ReadAll(conn)
			_ = conn.Close()
			if err != nil || string(got) != "from-pod\n" {
				t.Errorf("connection %d read %q (%v) from the pod, want %q then EOF", i, got, err, "from-pod\n")
			}
		}
		if err := stop(); err != nil {
			t.Errorf("ForwardPorts: %v", err)
		}
	})

	t.Run("nothing listening is reported", func(t *testing.T) {
		local, stop := forward(t, servePortForward(t, s, ns), 1)
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(hangGuard))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("read %d bytes from a port nobody listens on", n)
		}
		_ = c.Close()
		// client-go drops the whole forwarding connection after an error
		// on the error stream, but whether ForwardPorts has noticed by
		// the time it is stopped is client-go's timing, not gomon's: only
		// logged.
		t.Logf("ForwardPorts after a failed dial: %v", stop())
	})
}

// inNetNS makes a container join the network namespace at ns.
func inNetNS(ns string) func(map[string]any) {
	return func(spec map[string]any) {
		linux := spec["linux"].(map[string]any)
		for _, n := range linux["namespaces"].([]any) {
			if m := n.(map[string]any); m["type"] == "network" {
				m["path"] = ns
			}
		}
	}
}
