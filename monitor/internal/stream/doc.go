// Package stream is gomon's streaming server (docs/contract.md, "Streaming"): a
// loopback HTTP/1.1 server that hands out single-use session URLs and
// serves them over WebSocket.
//
//   - /exec/<token> and /attach/<token> speak the Kubernetes remote
//     command protocol (subprotocols v5.channel.k8s.io and
//     v4.channel.k8s.io): binary messages whose first byte is the channel
//     (0 stdin, 1 stdout, 2 stderr, 3 error as a metav1.Status JSON,
//     4 resize, 255 close), as client-go's remotecommand.NewWebSocketExecutor
//     speaks it.
//   - /port-forward/<token> tunnels the SPDY port-forward protocol
//     (portforward.k8s.io) inside WebSocket binary messages (subprotocol
//     SPDY/3.1+portforward.k8s.io), as client-go's
//     portforward.NewSPDYOverWebsocketDialer speaks it, and dials the
//     requested ports on 127.0.0.1 inside a network namespace.
//
// The package knows nothing of containers: an exec or attach session is a
// Command whose Run the caller supplies.
package stream
