// Package otlpsink is a do-nothing OpenTelemetry collector for the
// tracing benchmark: it accepts OTLP/gRPC (HTTP/2 without TLS) and
// OTLP/HTTP export requests on loopback, counts them and answers success,
// so that a monitor with tracing on does its real export work.
package otlpsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is a running collector.
type Sink struct {
	srv      *http.Server
	ln       net.Listener
	requests atomic.Int64
	bytes    atomic.Int64
	wg       sync.WaitGroup
	serveErr error
}

// Start listens on a free loopback port.
func Start() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Sink{ln: ln}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{Handler: http.HandlerFunc(s.handle), Protocols: protos, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Go(func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	})
	return s, nil
}

// Endpoint is the URL to give a monitor's --tracing-endpoint.
func (s *Sink) Endpoint() string { return "http://" + s.ln.Addr().String() }

// Requests and Bytes count the export requests received so far.
func (s *Sink) Requests() int64 { return s.requests.Load() }

// Bytes is the total request body size received so far.
func (s *Sink) Bytes() int64 { return s.bytes.Load() }

// handle answers an export: gRPC gets an empty length-prefixed message and
// grpc-status 0, HTTP/protobuf an empty 200.
func (s *Sink) handle(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	s.requests.Add(1)
	s.bytes.Add(n)
	if r.Header.Get("Content-Type") == "application/grpc" || r.ProtoMajor == 2 && r.Header.Get("Te") == "trailers" {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte{0, 0, 0, 0, 0}) // the client sees a closed stream on failure anyway
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("Grpc-Message", "")
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// Close stops the sink and waits for its goroutine.
func (s *Sink) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	return errors.Join(err, s.serveErr)
}
