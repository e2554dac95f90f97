package otlpsink

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
)

func TestSinkCountsHTTPAndGRPC(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	cases := []struct {
		name      string
		h2        bool
		ctype     string
		wantCType string
	}{
		{name: "http1 protobuf", ctype: "application/x-protobuf", wantCType: "application/x-protobuf"},
		{name: "h2c grpc", h2: true, ctype: "application/grpc", wantCType: "application/grpc"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{}
			if tc.h2 {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			cl := &http.Client{Transport: tr}
			defer cl.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, s.Endpoint()+"/x", bytes.NewReader([]byte("abc")))
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.ReadAll(resp.Body) // trailers arrive after the body
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.wantCType {
				t.Fatalf("status %d content-type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if tc.h2 && (resp.ProtoMajor != 2 || resp.Trailer.Get("Grpc-Status") != "0") {
				t.Fatalf("proto %d trailer %v", resp.ProtoMajor, resp.Trailer)
			}
			if got := s.Requests(); got != int64(i+1) {
				t.Fatalf("Requests = %d, want %d", got, i+1)
			}
		})
	}
	if s.Bytes() != 6 {
		t.Fatalf("Bytes = %d, want 6", s.Bytes())
	}
}
