package metrics

import "github.com/prometheus/client_golang/prometheus"

// Conns holds the collectors of the public listener's connections that are
// not event streams, and implements httpapi.ConnMetrics. Create it with
// NewConns.
type Conns struct {
	open prometheus.Gauge
	shed map[string]prometheus.Counter
}

// Reasons of sse_http_connections_shed_total (httpapi's shed reasons).
var shedReasons = []string{"refused", "idle", "waiting"}

// NewConns creates the collectors and registers them on reg.
func NewConns(reg prometheus.Registerer) *Conns {
	m := &Conns{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sse_http_connections",
			Help: "Connections of the public listener that are not event streams: waiting for a request, serving one, or idle between requests (capped by SSE_MAX_NON_STREAM_CONNECTIONS).",
		}),
		shed: map[string]prometheus.Counter{},
	}
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sse_http_connections_shed_total",
		Help: "Connections that are not streams closed to stay within SSE_MAX_NON_STREAM_CONNECTIONS(_PER_IP), by reason: refused (new, closed at once), idle or waiting (older ones closed for a new one).",
	}, []string{"reason"})
	for _, r := range shedReasons {
		m.shed[r] = shed.WithLabelValues(r)
	}
	reg.MustRegister(m.open, shed)
	return m
}

// NonStreamConnections implements httpapi.ConnMetrics.
func (m *Conns) NonStreamConnections(n int) { m.open.Set(float64(n)) }

// ConnectionShed implements httpapi.ConnMetrics.
func (m *Conns) ConnectionShed(reason string) {
	if c, ok := m.shed[reason]; ok {
		c.Inc()
	}
}
