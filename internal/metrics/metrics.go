// Package metrics holds the service's Prometheus collectors. They are
// registered on a registry passed in, never on the global one.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// Metrics implements stream.Metrics and httpapi.Metrics with the names of
// the contract. Create it with New.
type Metrics struct {
	connected      prometheus.Gauge
	connections    *prometheus.CounterVec
	dropped        map[stream.CloseReason]prometheus.Counter
	published      prometheus.Counter
	sent           prometheus.Counter
	replayed       prometheus.Counter
	bytes          prometheus.Counter
	heartbeats     prometheus.Counter
	delivery       *latencyHistogram
	connDuration   prometheus.Histogram
	connectionsFor map[stream.ConnResult]prometheus.Counter
	maxConns       prometheus.Gauge
	publishFailed  *prometheus.CounterVec
	requests       *prometheus.CounterVec
	requestTime    *prometheus.HistogramVec
}

var _ stream.Metrics = (*Metrics)(nil)

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sse_connected_clients", Help: "Open event streams.",
		}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sse_connections_total", Help: "Stream connection attempts by result.",
		}, []string{"result"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_events_published_total", Help: "Events accepted from publishers (idempotent repeats excluded).",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_events_sent_total", Help: "Events written to streams, replayed ones included.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_events_replayed_total", Help: "Events written to streams from history on resume.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_bytes_sent_total", Help: "Bytes written to streams (events, heartbeats, retry fields).",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_heartbeats_sent_total", Help: "Heartbeat comments written to idle streams.",
		}),
		delivery: newLatencyHistogram("sse_event_delivery_seconds",
			"Time from a publish being accepted to the event being written to a stream.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
		connDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sse_connection_duration_seconds",
			Help:    "Lifetime of event streams.",
			Buckets: []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400},
		}),
	}
	m.maxConns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sse_max_connections", Help: "The SSE_MAX_CONNECTIONS limit in force (0: none).",
	})
	m.publishFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sse_publish_failures_total", Help: "Refused publish requests, by reason.",
	}, []string{"reason"})
	for _, r := range []string{"invalid", "unauthorized", "forbidden", "too_large", "unavailable", "timeout", "error"} {
		m.publishFailed.WithLabelValues(r)
	}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "HTTP requests on the public listener, streams excepted, by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	m.requestTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Duration of HTTP requests on the public listener, streams excepted.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "method"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sse_clients_dropped_total", Help: "Streams ended by the server, by reason.",
	}, []string{"reason"})
	// Resolve label values once: the hot path never looks them up, and
	// every series exists (at 0) from the start.
	m.dropped = map[stream.CloseReason]prometheus.Counter{}
	for _, r := range []stream.CloseReason{stream.DroppedSlow, stream.DroppedWriteErr, stream.DroppedShutdown} {
		m.dropped[r] = dropped.WithLabelValues(string(r))
	}
	m.connectionsFor = map[stream.ConnResult]prometheus.Counter{}
	for _, r := range stream.ConnResults() {
		m.connectionsFor[r] = m.connections.WithLabelValues(string(r))
	}
	reg.MustRegister(
		m.connected, m.connections, dropped, m.published, m.sent, m.replayed,
		m.bytes, m.heartbeats, m.delivery, m.connDuration,
		m.maxConns, m.publishFailed, m.requests, m.requestTime,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ConnectionAttempt implements httpapi.Metrics.
func (m *Metrics) ConnectionAttempt(result stream.ConnResult) {
	if c, ok := m.connectionsFor[result]; ok {
		c.Inc()
		return
	}
	m.connections.WithLabelValues(string(result)).Inc()
}

// StreamOpened implements stream.Metrics.
func (m *Metrics) StreamOpened() { m.connected.Inc() }

// StreamClosed implements stream.Metrics.
func (m *Metrics) StreamClosed(reason stream.CloseReason, lifetime time.Duration) {
	m.connected.Dec()
	m.connDuration.Observe(lifetime.Seconds())
	if c, ok := m.dropped[reason]; ok {
		c.Inc()
	}
}

// EventsPublished implements stream.Metrics.
func (m *Metrics) EventsPublished(n int) { m.published.Add(float64(n)) }

// EventsSent implements stream.Metrics.
func (m *Metrics) EventsSent(events, replayed, bytes int) {
	m.sent.Add(float64(events))
	if replayed > 0 {
		m.replayed.Add(float64(replayed))
	}
	m.bytes.Add(float64(bytes))
}

// Delivered implements stream.Metrics. The exemplar, when valid, links
// one of the n observations to the publish's trace.
func (m *Metrics) Delivered(latency time.Duration, n int, exemplar trace.TraceID) {
	m.delivery.observe(latency, n, exemplar)
}

// SetMaxConnections records the connection limit in force (0: none).
func (m *Metrics) SetMaxConnections(n int) { m.maxConns.Set(float64(n)) }

// PublishFailed implements httpapi.Metrics.
func (m *Metrics) PublishFailed(reason string) { m.publishFailed.WithLabelValues(reason).Inc() }

// Request implements httpapi.Metrics. Routes are patterns, so the label
// values stay few; an unmatched request counts as route "none".
func (m *Metrics) Request(route, method string, code int, took time.Duration) {
	if route == "" {
		route = "none"
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.requestTime.WithLabelValues(route, method).Observe(took.Seconds())
}

// HeartbeatSent implements stream.Metrics.
func (m *Metrics) HeartbeatSent() { m.heartbeats.Inc() }

// HistoryStats is what the in-memory broker holds (memory.Stats).
type HistoryStats struct {
	Bytes                int64
	Events, Topics, Keys int
	Evicted, KeysEvicted uint64
}

// RegisterHistory registers gauges and counters read from stats at each
// scrape: what the in-memory history holds against its bounds
// (SSE_HISTORY_MAX_BYTES, SSE_IDEMPOTENCY_MAX_KEYS) and what the bounds
// evicted early. Register them only with the memory backend.
func RegisterHistory(reg prometheus.Registerer, stats func() HistoryStats) {
	gauge := func(name, help string, v func(HistoryStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	counter := func(name, help string, v func(HistoryStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	reg.MustRegister(
		gauge("sse_history_bytes", "Memory the retained history takes by its own count (bounded by SSE_HISTORY_MAX_BYTES).",
			func(s HistoryStats) float64 { return float64(s.Bytes) }),
		gauge("sse_history_events", "Events retained for resume.",
			func(s HistoryStats) float64 { return float64(s.Events) }),
		gauge("sse_history_topics", "Topics with retained events.",
			func(s HistoryStats) float64 { return float64(s.Topics) }),
		gauge("sse_idempotency_keys", "Idempotency keys remembered (bounded by SSE_IDEMPOTENCY_MAX_KEYS).",
			func(s HistoryStats) float64 { return float64(s.Keys) }),
		counter("sse_history_evicted_total", "Events evicted early because the history reached SSE_HISTORY_MAX_BYTES (resumes from before them get sse-gap).",
			func(s HistoryStats) float64 { return float64(s.Evicted) }),
		counter("sse_idempotency_keys_evicted_total", "Idempotency keys forgotten before their window because the table reached SSE_IDEMPOTENCY_MAX_KEYS.",
			func(s HistoryStats) float64 { return float64(s.KeysEvicted) }),
	)
}

// Broker holds the sse_broker_* collectors of the distributed backend and
// implements its Metrics interface (internal/broker/nats). Create it with
// NewBroker only when that backend is in use: its series would otherwise
// report a backend that does not exist as down.
type Broker struct {
	connected      prometheus.Gauge
	publishTime    prometheus.Histogram
	publishFailed  map[string]prometheus.Counter
	replayTime     prometheus.Histogram
	replayFailed   map[string]prometheus.Counter
	received, lost prometheus.Counter
}

// Failure reasons of the broker's publishes and replays (the nats
// package's Failure* values).
var brokerFailures = []string{"unavailable", "timeout", "error"}

// NewBroker creates the broker collectors and registers them on reg.
func NewBroker(reg prometheus.Registerer) *Broker {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	b := &Broker{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sse_broker_connected", Help: "1 while this replica is connected to the event backend (NATS), else 0.",
		}),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sse_broker_publish_duration_seconds", Help: "Time to store a publish in the event backend, retries included (stored ones only).",
			Buckets: latency,
		}),
		replayTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sse_broker_replay_duration_seconds", Help: "Time to read a resume's history from the event backend, writing it to the client included.",
			Buckets: latency,
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_broker_events_received_total", Help: "Events this replica's live feed received from the event backend.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sse_broker_events_lost_total", Help: "Events removed from the event backend before this replica's live feed could read them (streams got an sse-gap).",
		}),
	}
	publishFailed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sse_broker_publish_failures_total", Help: "Publishes the event backend did not store, by reason (timeout: sent, outcome unknown).",
	}, []string{"reason"})
	replayFailed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sse_broker_replay_failures_total", Help: "Resumes whose history could not be read from the event backend, by reason.",
	}, []string{"reason"})
	b.publishFailed, b.replayFailed = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, r := range brokerFailures {
		b.publishFailed[r] = publishFailed.WithLabelValues(r)
		b.replayFailed[r] = replayFailed.WithLabelValues(r)
	}
	reg.MustRegister(b.connected, b.publishTime, publishFailed, b.replayTime, replayFailed, b.received, b.lost)
	return b
}

// BrokerConnected implements the broker's Metrics.
func (b *Broker) BrokerConnected(up bool) {
	if up {
		b.connected.Set(1)
	} else {
		b.connected.Set(0)
	}
}

// BrokerPublished implements the broker's Metrics.
func (b *Broker) BrokerPublished(_ int, took time.Duration, failure string) {
	if failure == "" {
		b.publishTime.Observe(took.Seconds())
		return
	}
	b.failed(b.publishFailed, failure)
}

// BrokerReplayed implements the broker's Metrics.
func (b *Broker) BrokerReplayed(took time.Duration, failure string) {
	if failure == "" {
		b.replayTime.Observe(took.Seconds())
		return
	}
	b.failed(b.replayFailed, failure)
}

func (b *Broker) failed(by map[string]prometheus.Counter, reason string) {
	if c, ok := by[reason]; ok {
		c.Inc()
		return
	}
	by["error"].Inc()
}

// BrokerReceived implements the broker's Metrics.
func (b *Broker) BrokerReceived(n int) { b.received.Add(float64(n)) }

// BrokerLost implements the broker's Metrics.
func (b *Broker) BrokerLost(n uint64) { b.lost.Add(float64(n)) }
