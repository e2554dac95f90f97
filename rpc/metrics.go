package rpc

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomon-dev/gomon/metrics"
)

// MetricRequests counts RPCs by method (conmon-rs's span names:
// create_container, exec_sync_container, ...) and outcome (ok, error: the
// client got an exception).
var MetricRequests = &metrics.Desc{Name: "gomon.rpc.requests", Unit: "{request}", Kind: metrics.Counter,
	Help: "RPCs served, by method and outcome (ok, error)."}

// rpcMetrics counts RPCs; nil unless EnableMetrics was called.
type rpcMetrics struct {
	start time.Time
	// mu guards methods, one entry per method name handle is called
	// with: the schema's methods, so at most a dozen.
	mu      sync.Mutex
	methods map[string]*[2]atomic.Uint64 // guarded by mu; [ok, error]
	order   []string                     // guarded by mu; first-seen order
}

// EnableMetrics makes the server count RPCs for CollectMetrics. Call it
// before Serve.
func (s *Server) EnableMetrics() {
	s.metrics = &rpcMetrics{start: time.Now(), methods: make(map[string]*[2]atomic.Uint64)}
}

// record counts one RPC of method with its result.
func (m *rpcMetrics) record(method string, err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	c, ok := m.methods[method]
	if !ok {
		c = new([2]atomic.Uint64)
		m.methods[method] = c
		m.order = append(m.order, method)
	}
	m.mu.Unlock()
	i := 0
	if err != nil {
		i = 1
	}
	c[i].Add(1)
}

// CollectMetrics adds the RPC counters to b, each labelled with labels
// plus rpc.method and outcome. It does nothing unless EnableMetrics was
// called. Safe for concurrent use.
func (s *Server) CollectMetrics(b *metrics.Batch, labels ...metrics.Label) {
	m := s.metrics
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, method := range m.order {
		c := m.methods[method]
		for i, outcome := range [...]string{"ok", "error"} {
			b.Counter(MetricRequests, c[i].Load(), m.start, b.Labels(labels,
				metrics.Label{Key: "rpc.method", Value: method}, metrics.Label{Key: "outcome", Value: outcome})...)
		}
	}
}
