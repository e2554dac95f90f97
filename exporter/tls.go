//go:build gomon_otlp_tls

package exporter

import (
	"context"
	"crypto/tls"
	"net"
)

func init() {
	tlsClient = func(ctx context.Context, conn net.Conn, serverName string, h2 bool) (net.Conn, error) {
		cfg := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
		if h2 {
			cfg.NextProtos = []string{"h2"}
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err //nolint:wrapcheck // wrapped by the caller
		}
		return tc, nil
	}
}
