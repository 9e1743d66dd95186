// Package bench is the engine of cmd/sse-bench, the load generator of
// sse-service, and belongs to that command alone (nothing else may import
// it): it opens many SSE streams on loopback, publishes events at a fixed
// rate, checks every stream receives every event in order and measures
// delivery latency and the server's memory and CPU cost.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// Config is one benchmark run.
type Config struct {
	Targets []Target
	// Sources are local addresses streams are dialed from, round-robin;
	// empty lets the kernel choose.
	Sources []net.IP
	Streams int
	// Dials is how many streams are being opened at once at most.
	Dials int

	// Topic is the topic, or with Topics above 1 the prefix of the topics
	// <Topic>-0 ... <Topic>-<Topics-1>: stream i subscribes to topic
	// i mod Topics, publisher lane l publishes to topic l mod Topics.
	// Zero Topics means 1.
	Topic  string
	Topics int
	Token  string
	// SubscribeToken is sent as the streams' bearer token (a JWT for a
	// private topic); empty sends none.
	SubscribeToken string
	// Rate is events per second to publish; 0 publishes nothing.
	Rate float64
	// Batch is events per publish request; above 1 the batch endpoint is
	// used.
	Batch int
	// Size is the payload size in bytes.
	Size int
	// Publishers is the number of publishing goroutines (lanes).
	Publishers int

	// Settle is the pause after the streams are open before the server's
	// memory is read; Warmup runs publishing before the measurement window
	// of length Duration; Drain waits for deliveries after publishing.
	Settle, Warmup, Duration, Drain time.Duration

	// Wait is how long the targets have, in all, to answer before the
	// streams are opened; zero does not wait (the first dials must
	// succeed).
	Wait time.Duration

	// PIDs are the server processes whose memory and CPU are sampled.
	PIDs []int
	// Pollers is the number of goroutines reading the streams.
	Pollers int

	// Log receives progress messages; nil discards them.
	Log *slog.Logger
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case len(c.Targets) == 0:
		return errors.New("no target url")
	case c.Streams < 1:
		return errors.New("streams must be at least 1")
	case c.Dials < 1:
		return errors.New("dials must be at least 1")
	case c.Topic == "":
		return errors.New("topic must not be empty")
	case c.Topics < 0 || c.Topics > MaxLanes:
		return fmt.Errorf("topics must be 1 to %d", MaxLanes)
	case c.Rate > 0 && c.Publishers < c.Topics:
		return errors.New("publishers must be at least topics: each topic has its own publisher lanes")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return errors.New("rate must be a number >= 0")
	case c.Rate > 0 && c.Token == "":
		return errors.New("a publish token is required unless rate is 0")
	case c.Batch < 1 || c.Batch > 1000:
		return errors.New("batch must be 1 to 1000")
	case c.Size < MinPayloadSize || c.Size > MaxPayloadSize:
		return fmt.Errorf("size must be %d to %d bytes", MinPayloadSize, MaxPayloadSize)
	case c.Publishers < 1 || c.Publishers > MaxLanes:
		return fmt.Errorf("publishers must be 1 to %d", MaxLanes)
	case c.Settle < 0 || c.Warmup < 0 || c.Duration <= 0 || c.Drain < 0 || c.Wait < 0:
		return errors.New("duration must be positive and warmup, drain, settle and wait not negative")
	case c.Pollers < 1:
		return errors.New("pollers must be at least 1")
	}
	return nil
}

// topicNames lists the topics of the run.
func (c *Config) topicNames() []string {
	if c.Topics <= 1 {
		return []string{c.Topic}
	}
	names := make([]string, c.Topics)
	for i := range names {
		names[i] = c.Topic + "-" + strconv.Itoa(i)
	}
	return names
}

// progressEvery is how often progress is logged while publishing.
const progressEvery = 5 * time.Second

// snapshot is the state of a run at one moment.
type snapshot struct {
	at        time.Time
	delivered int64
	published int64
	serverCPU time.Duration
	benchCPU  time.Duration
	cpuErr    error
}

// run is the state of one Run.
type run struct {
	cfg        Config
	log        *slog.Logger
	streams    *streamSet
	pub        *publisher
	recordFrom atomic.Int64
}

// Run executes the benchmark described by cfg. It returns an error only if
// the run cannot start; everything that goes wrong later is in the report.
// Cancelling ctx (e.g. on SIGINT) ends the run early; it still reports.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Log}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := waitForTargets(ctx, cfg.Targets, cfg.Wait, r.log); err != nil {
		return nil, err
	}
	rep := newReport(cfg)

	var before procSample
	if len(cfg.PIDs) > 0 {
		var err error
		if before, err = readProcs(cfg.PIDs); err != nil {
			return nil, err
		}
	}

	r.recordFrom.Store(math.MaxInt64)
	pollers, err := startPollers(cfg.Pollers, &r.recordFrom)
	if err != nil {
		return nil, err
	}
	defer pollers.close()
	r.streams = &streamSet{
		targets: cfg.Targets,
		sources: cfg.Sources,
		topics:  cfg.topicNames(),
		token:   cfg.SubscribeToken,
		pollers: pollers,
	}
	r.connect(ctx, rep)
	if sleep(ctx, cfg.Settle) && len(cfg.PIDs) > 0 {
		after, err := readProcs(cfg.PIDs)
		rep.setServerMemory(before, after, err)
	}
	w0, w1 := r.load(ctx)

	streams, latency := pollers.close()
	rep.Interrupted = ctx.Err() != nil
	rep.setWindow(w0, w1, len(cfg.PIDs) > 0)
	rep.setStreams(streams, latency)
	if rss, err := readPeakRSS("self"); err == nil {
		rep.Bench.PeakRSSKiB = rss
	}
	if r.pub != nil {
		rep.setPublisher(r.pub)
	}
	rep.finish()
	return rep, nil
}

// load publishes through the warmup and the measurement window, then waits
// for the drain, and returns snapshots of the window's start and end.
func (r *run) load(ctx context.Context) (start, end snapshot) {
	paceCtx, stopPacing := context.WithCancel(ctx)
	defer stopPacing()
	if r.cfg.Rate > 0 {
		r.pub = newPublisher(r.cfg.Targets, r.cfg.Token, r.cfg.topicNames(), r.cfg.Batch, r.cfg.Size, r.cfg.Publishers)
		r.pub.start(paceCtx, ctx, r.cfg.Rate)
		r.log.Info("publishing", "rate", r.cfg.Rate, "batch", r.cfg.Batch,
			"warmup", r.cfg.Warmup, "duration", r.cfg.Duration)
	}
	stopProgress := r.logProgress()
	defer stopProgress()

	sleep(ctx, r.cfg.Warmup)
	start = r.snapshot()
	r.recordFrom.Store(start.at.UnixNano())
	sleep(ctx, r.cfg.Duration)
	end = r.snapshot()

	stopPacing()
	if r.pub != nil {
		r.pub.wait()
	}
	sleep(ctx, r.cfg.Drain)
	return start, end
}

// connect opens all streams and records how that went.
func (r *run) connect(ctx context.Context, rep *Report) {
	r.log.Info("opening streams", "streams", r.cfg.Streams, "targets", len(r.cfg.Targets),
		"sources", len(r.cfg.Sources), "dials", r.cfg.Dials)
	start := time.Now()
	r.streams.open(ctx, r.cfg.Streams, r.cfg.Dials)
	rep.ConnectSeconds = round(time.Since(start).Seconds(), 3)
	rep.StreamsConnected = r.streams.connected
	rep.streamsPerTopic = r.streams.perTopic
	rep.StreamsFailed = r.streams.failed
	if r.streams.firstFail != nil {
		rep.FirstConnectError = r.streams.firstFail.Error()
	}
	r.log.Info("streams open", "connected", rep.StreamsConnected, "failed", rep.StreamsFailed,
		"seconds", rep.ConnectSeconds)
}

// snapshot samples the counters and CPU times.
func (r *run) snapshot() snapshot {
	s := snapshot{at: time.Now(), delivered: r.streams.pollers.delivered()}
	if r.pub != nil {
		s.published = r.pub.published()
	}
	var err error
	if s.benchCPU, err = readCPU("self"); err != nil {
		s.cpuErr = err
	}
	for _, pid := range r.cfg.PIDs {
		cpu, err := readCPU(strconv.Itoa(pid))
		if err != nil {
			s.cpuErr = err
		}
		s.serverCPU += cpu
	}
	return s
}

// logProgress logs publishing and delivery totals periodically until the
// returned function is called.
func (r *run) logProgress() (stop func()) {
	ticker := time.NewTicker(progressEvery)
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
				var published int64
				if r.pub != nil {
					published = r.pub.published()
				}
				r.log.Info("progress", "published", published, "delivered", r.streams.pollers.delivered())
			}
		}
	}()
	return func() {
		ticker.Stop()
		close(done)
		<-ended
	}
}

// sleep waits for d or until ctx is done, and reports whether it waited
// the full time.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
