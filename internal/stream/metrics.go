package stream

import (
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Metrics receives counts from the hub. Implementations must be safe for
// concurrent use and cheap: EventsSent and Delivered run on the hot path.
type Metrics interface {
	StreamOpened()
	StreamClosed(reason CloseReason, lifetime time.Duration)
	EventsPublished(n int)
	// EventsSent counts events written to one stream in one write, of which
	// replayed came from history, and all bytes written (frames, heartbeats,
	// retry fields).
	EventsSent(events, replayed, bytes int)
	// Delivered observes n writes of one event that each took latency
	// from its publish (a fan-out writes many with one clock reading).
	// exemplar, when valid, is the publish's trace id to attach to one.
	Delivered(latency time.Duration, n int, exemplar trace.TraceID)
	HeartbeatSent()
}

// NopMetrics counts nothing. Useful in tests and benchmarks.
type NopMetrics struct{}

func (NopMetrics) StreamOpened()                               {}
func (NopMetrics) StreamClosed(CloseReason, time.Duration)     {}
func (NopMetrics) EventsPublished(int)                         {}
func (NopMetrics) EventsSent(int, int, int)                    {}
func (NopMetrics) Delivered(time.Duration, int, trace.TraceID) {}
func (NopMetrics) HeartbeatSent()                              {}

var _ Metrics = NopMetrics{}
