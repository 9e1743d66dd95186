package bench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of a run.
type Report struct {
	Targets     []string `json:"targets"`
	Topic       string   `json:"topic"`
	Topics      int      `json:"topics"`
	Interrupted bool     `json:"interrupted"`

	StreamsRequested  int     `json:"streams_requested"`
	StreamsConnected  int     `json:"streams_connected"`
	StreamsFailed     int     `json:"streams_failed"`
	FirstConnectError string  `json:"first_connect_error,omitempty"`
	StreamsDropped    int     `json:"streams_dropped"`
	FirstDropError    string  `json:"first_drop_error,omitempty"`
	ConnectSeconds    float64 `json:"connect_seconds"`

	TargetRate   float64 `json:"target_rate"`
	Batch        int     `json:"batch"`
	PayloadBytes int     `json:"payload_bytes"`
	Publishers   int     `json:"publishers"`
	// Published counts events the service accepted (2xx).
	Published         int64            `json:"published"`
	PublishRequests   int64            `json:"publish_requests"`
	PublishErrors     map[string]int64 `json:"publish_errors"`
	FirstPublishError string           `json:"first_publish_error,omitempty"`
	// SkippedEvents were due but not sent: the publishers fell behind.
	SkippedEvents int64 `json:"skipped_events"`

	// The measurement window: after warmup, while publishing.
	WindowSeconds       float64 `json:"window_seconds"`
	PublishedInWindow   int64   `json:"published_in_window"`
	PublishRate         float64 `json:"publish_rate"`
	DeliveriesInWindow  int64   `json:"deliveries_in_window"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`

	// Expected is each event published times the streams connected to
	// its topic; Missing is what never arrived: Expected − (Received −
	// Duplicates).
	ExpectedDeliveries int64 `json:"expected_deliveries"`
	ReceivedDeliveries int64 `json:"received_deliveries"`
	MissingDeliveries  int64 `json:"missing_deliveries"`
	Gaps               int64 `json:"gaps"`
	Duplicates         int64 `json:"duplicates"`
	ForeignEvents      int64 `json:"foreign_events"`
	GapNotices         int64 `json:"gap_notices"`
	Heartbeats         int64 `json:"heartbeats"`
	Bytes              int64 `json:"bytes"`

	Latency LatencyReport `json:"latency"`
	Server  *ServerReport `json:"server,omitempty"`
	Bench   BenchReport   `json:"bench"`

	OK       bool     `json:"ok"`
	Failures []string `json:"failures"`

	streamsPerTopic map[int]int // streams connected, by topic index
}

// LatencyReport summarises the latency of events published in the window,
// from the publish timestamp (taken just before the request is sent) to the
// read that completed the event on a stream. Time is read once per read, so
// events that arrive together share their read's time.
type LatencyReport struct {
	Samples uint64  `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// ServerReport is the server processes' cost, summed over PIDs.
type ServerReport struct {
	PIDs            []int   `json:"pids"`
	RSSBeforeKiB    int64   `json:"rss_before_kib"`
	RSSAfterKiB     int64   `json:"rss_after_kib"`
	RSSPerStreamKiB float64 `json:"rss_per_stream_kib"`
	// CPUSeconds is user+system time in the window.
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	Error                string  `json:"error,omitempty"`
}

// BenchReport is sse-bench's own CPU cost in the window, to show it was not
// the bottleneck.
type BenchReport struct {
	CPUSeconds           float64 `json:"cpu_seconds"`
	CPUMicrosPerDelivery float64 `json:"cpu_us_per_delivery"`
	PeakRSSKiB           int64   `json:"peak_rss_kib"`
}

func newReport(cfg Config) *Report {
	r := &Report{
		Topic:            cfg.Topic,
		Topics:           max(1, cfg.Topics),
		StreamsRequested: cfg.Streams,
		TargetRate:       cfg.Rate,
		Batch:            cfg.Batch,
		PayloadBytes:     cfg.Size,
		Publishers:       cfg.Publishers,
		PublishErrors:    map[string]int64{},
		Failures:         []string{},
	}
	for _, t := range cfg.Targets {
		r.Targets = append(r.Targets, t.Base)
	}
	if len(cfg.PIDs) > 0 {
		r.Server = &ServerReport{PIDs: cfg.PIDs}
	}
	return r
}

// setServerMemory records the server's RSS before and after opening the
// streams.
func (r *Report) setServerMemory(before, after procSample, err error) {
	if err != nil {
		r.Server.Error = err.Error()
		return
	}
	r.Server.RSSBeforeKiB = before.rssKiB
	r.Server.RSSAfterKiB = after.rssKiB
	if r.StreamsConnected > 0 {
		r.Server.RSSPerStreamKiB = round(float64(after.rssKiB-before.rssKiB)/float64(r.StreamsConnected), 2)
	}
}

// setWindow records the measurement window between two snapshots.
func (r *Report) setWindow(w0, w1 snapshot, server bool) {
	secs := w1.at.Sub(w0.at).Seconds()
	r.WindowSeconds = round(secs, 3)
	r.PublishedInWindow = w1.published - w0.published
	r.DeliveriesInWindow = w1.delivered - w0.delivered
	if secs > 0 {
		r.PublishRate = round(float64(r.PublishedInWindow)/secs, 1)
		r.DeliveriesPerSecond = round(float64(r.DeliveriesInWindow)/secs, 1)
	}
	r.Bench.CPUSeconds = round((w1.benchCPU - w0.benchCPU).Seconds(), 2)
	r.Bench.CPUMicrosPerDelivery = perDelivery(w1.benchCPU-w0.benchCPU, r.DeliveriesInWindow)
	if !server {
		return
	}
	if err := cmp.Or(w0.cpuErr, w1.cpuErr); err != nil {
		r.Server.Error = err.Error()
		return
	}
	r.Server.CPUSeconds = round((w1.serverCPU - w0.serverCPU).Seconds(), 2)
	r.Server.CPUMicrosPerDelivery = perDelivery(w1.serverCPU-w0.serverCPU, r.DeliveriesInWindow)
}

func perDelivery(cpu time.Duration, deliveries int64) float64 {
	if deliveries == 0 {
		return 0
	}
	return round(float64(cpu.Microseconds())/float64(deliveries), 3)
}

// setStreams adds up what the streams received. Call it after they ended.
func (r *Report) setStreams(streams []*stream, latency *Histogram) {
	var stats StreamStats
	for _, st := range streams {
		stats.Add(st.parser.Stats)
		if st.dropErr != nil {
			if r.StreamsDropped == 0 {
				r.FirstDropError = st.dropErr.Error()
			}
			r.StreamsDropped++
		}
	}
	r.ReceivedDeliveries = stats.Events
	r.Gaps = stats.Gaps
	r.Duplicates = stats.Duplicates
	r.ForeignEvents = stats.Foreign
	r.GapNotices = stats.GapNotices
	r.Heartbeats = stats.Heartbeats
	r.Bytes = stats.Bytes
	r.Latency = LatencyReport{
		Samples: latency.Count(),
		P50Ms:   ms(latency.Quantile(0.50)),
		P90Ms:   ms(latency.Quantile(0.90)),
		P99Ms:   ms(latency.Quantile(0.99)),
		MaxMs:   ms(latency.Max()),
	}
}

// setPublisher adds up what the publisher lanes did. Call it after they
// ended.
func (r *Report) setPublisher(p *publisher) {
	for _, l := range p.lanes {
		r.Published += l.published.Load()
		// Each of the lane's events goes to the streams of its topic.
		r.ExpectedDeliveries += l.published.Load() * int64(r.streamsPerTopic[l.topic])
		r.PublishRequests += l.requests
		for kind, n := range l.errors {
			r.PublishErrors[kind] += n
		}
		if r.FirstPublishError == "" && l.firstErr != nil {
			r.FirstPublishError = l.firstErr.Error()
		}
	}
	r.SkippedEvents = p.skipped.Load() * int64(p.batch)
}

// finish derives the totals and the verdict.
func (r *Report) finish() {
	r.MissingDeliveries = max(0, r.ExpectedDeliveries-(r.ReceivedDeliveries-r.Duplicates))
	if r.StreamsConnected < r.StreamsRequested {
		r.fail("only %d of %d streams connected (first error: %s)",
			r.StreamsConnected, r.StreamsRequested, r.FirstConnectError)
	}
	if r.StreamsDropped > 0 {
		r.fail("%d streams ended early (first: %s)", r.StreamsDropped, r.FirstDropError)
	}
	if r.Gaps > 0 {
		r.fail("%d gaps: sequence numbers skipped on streams", r.Gaps)
	}
	if r.Duplicates > 0 {
		r.fail("%d duplicate or out-of-order events", r.Duplicates)
	}
	if r.MissingDeliveries > 0 && !r.Interrupted {
		r.fail("%d of %d expected deliveries never arrived", r.MissingDeliveries, r.ExpectedDeliveries)
	}
	r.OK = len(r.Failures) == 0
}

func (r *Report) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "%-11s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "sse-bench: %d streams on %s, topic %q", r.StreamsRequested, strings.Join(r.Targets, ","), r.Topic)
	if r.Topics > 1 {
		fmt.Fprintf(&b, " (%d topics: %s-0 ...)", r.Topics, r.Topic)
	}
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n")

	line("streams", "%d connected, %d failed, %d ended early; opened in %.2fs",
		r.StreamsConnected, r.StreamsFailed, r.StreamsDropped, r.ConnectSeconds)
	if r.FirstConnectError != "" {
		line("", "first connect error: %s", r.FirstConnectError)
	}
	if r.FirstDropError != "" {
		line("", "first early end: %s", r.FirstDropError)
	}
	if r.TargetRate == 0 {
		line("publishing", "off (rate 0)")
	} else {
		line("publishing", "%d events accepted in %d requests; target %g/s, %.1f/s in window; batch %d, %d B payload, %d publishers",
			r.Published, r.PublishRequests, r.TargetRate, r.PublishRate, r.Batch, r.PayloadBytes, r.Publishers)
		line("", "errors: %s; %d events skipped (publishers behind schedule)", formatErrors(r.PublishErrors), r.SkippedEvents)
	}
	if r.FirstPublishError != "" {
		line("", "first publish error: %s", r.FirstPublishError)
	}
	line("deliveries", "%d expected (published × streams of the topic), %d received, %d missing",
		r.ExpectedDeliveries, r.ReceivedDeliveries, r.MissingDeliveries)
	line("", "%d in the %.1fs window = %.0f deliveries/s", r.DeliveriesInWindow, r.WindowSeconds, r.DeliveriesPerSecond)
	line("order", "%d gaps, %d duplicates; %d other events (%d sse-gap notices), %d heartbeats, %.1f MiB read",
		r.Gaps, r.Duplicates, r.ForeignEvents, r.GapNotices, r.Heartbeats, float64(r.Bytes)/(1<<20))
	if r.Latency.Samples == 0 {
		line("latency", "no samples")
	} else {
		line("latency", "p50 %s  p90 %s  p99 %s  max %s  (%d samples)",
			fmtMs(r.Latency.P50Ms), fmtMs(r.Latency.P90Ms), fmtMs(r.Latency.P99Ms), fmtMs(r.Latency.MaxMs), r.Latency.Samples)
		line("", "from the publish timestamp (taken before the request) to the read that")
		line("", "completed the event: one clock read per read, so events that arrive in")
		line("", "one read share its time; bench queueing is included")
	}
	if s := r.Server; s != nil {
		line("server", "pid %v: RSS %.1f MiB before streams, %.1f MiB with them (settled) = %.1f KiB/stream",
			s.PIDs, float64(s.RSSBeforeKiB)/1024, float64(s.RSSAfterKiB)/1024, s.RSSPerStreamKiB)
		line("", "CPU %.2fs in window = %.2f µs/delivery", s.CPUSeconds, s.CPUMicrosPerDelivery)
		if s.Error != "" {
			line("", "sampling error: %s", s.Error)
		}
	}
	line("bench", "CPU %.2fs in window = %.2f µs/delivery; peak RSS %.1f MiB",
		r.Bench.CPUSeconds, r.Bench.CPUMicrosPerDelivery, float64(r.Bench.PeakRSSKiB)/1024)
	if r.OK {
		line("result", "PASS")
	} else {
		line("result", "FAIL")
		for _, f := range r.Failures {
			line("", "- %s", f)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", kind, errs[kind]))
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func fmtMs(v float64) string { return fmt.Sprintf("%.3fms", v) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
