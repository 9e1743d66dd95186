// Package nats is the distributed broker: events are stored in a NATS
// JetStream stream shared by every replica, so a publish on one replica
// reaches subscribers on all of them and a client can resume on any.
//
// Each topic is one subject, <prefix>.<base64url(topic)>: topics may hold
// '.', '*', '>' and other characters that subjects treat specially, and
// base64url has none of them, so the mapping cannot be ambiguous. Event ids
// are <epoch>-<stream sequence>, the epoch coming from the stream's creation
// time: ids are global across replicas, survive restarts, and an id from a
// stream that was deleted and recreated is recognised.
//
// The work is split by job: publish.go stores events (one publish in
// flight per topic per replica, concurrent requests gathered into atomic
// batches), live.go hands the hub the events of the topics it has
// subscribers for (the stream republishes every event to a core subject
// per topic; a replica subscribes to its topics' and repairs what a core
// subscription lost from the stream), feed.go is the older feed of every
// event through one consumer per replica (for a stream that does not
// republish), replay.go reads history for a resume with direct gets (no
// consumer per resume), jsapi.go speaks the few JetStream API requests
// nats.go has no call for.
package nats

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/sse-service/sse-service/internal/ratelog"
	"github.com/sse-service/sse-service/internal/stream"
)

// Options configure the broker. Zero values take the defaults noted.
type Options struct {
	// URL is one or more server URLs, comma separated. Required.
	URL string
	// CredsFile and CAFile are optional credentials and TLS CA files.
	CredsFile, CAFile string
	// Stream is the JetStream stream name. Default "SSE".
	Stream string
	// SubjectPrefix starts every subject. Default "sse".
	SubjectPrefix string
	// Replicas of the stream, when the broker creates it. Default 1.
	Replicas int
	// ManageStream lets the broker create or update the stream with the
	// retention below; otherwise the stream must exist, with direct gets
	// allowed.
	ManageStream bool
	// Retention, mapped onto the stream: MaxMsgsPerSubject, MaxAge and the
	// duplicate window. Defaults 1000, 1h, 2m.
	HistorySize       int
	HistoryTTL        time.Duration
	IdempotencyWindow time.Duration
	// RequestTimeout bounds each request to the server, and each publish
	// with its retries. Default 5s.
	RequestTimeout time.Duration
	// MaxRound is how many events of concurrent publishes to one topic
	// are stored together at most (a publish of more is stored whole).
	// They reach subscribers as one burst, so it should be well below the
	// subscribers' queue (stream.Options.ClientBuffer). Default 64.
	MaxRound int
	// EveryEvent makes the replica read every event of the stream (one
	// consumer per replica), whatever topics its hub has subscribers for:
	// the feed of earlier versions, kept for a stream that does not
	// republish its messages (created by hand without RePublish) and to
	// compare the two. By default a replica reads only its topics' events.
	EveryEvent bool
	// Log receives connection state changes and failures; nil discards
	// them.
	Log *slog.Logger
	// Metrics receives the broker's counts; nil counts nothing.
	Metrics Metrics
}

// Defaults of Options.Stream, Options.SubjectPrefix and Options.Replicas
// (and of the service's SSE_NATS_STREAM, _SUBJECT_PREFIX and _REPLICAS).
const (
	DefaultStream        = "SSE"
	DefaultSubjectPrefix = "sse"
	DefaultReplicas      = 1
)

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if o.Replicas <= 0 {
		o.Replicas = DefaultReplicas
	}
	o.HistorySize, o.HistoryTTL, o.IdempotencyWindow =
		stream.RetentionDefaults(o.HistorySize, o.HistoryTTL, o.IdempotencyWindow)
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.MaxRound <= 0 {
		o.MaxRound = 64
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = nopMetrics{}
	}
	return o
}

// Metrics receives what the broker does. Implementations must be safe for
// concurrent use and cheap: Received runs once per event.
type Metrics interface {
	// BrokerConnected reports the connection to NATS going up or down.
	BrokerConnected(up bool)
	// BrokerPublished observes one publish of events events that took
	// took; failure is "" when they were stored, else one of the
	// Failure* reasons.
	BrokerPublished(events int, took time.Duration, failure string)
	// BrokerReplayed observes one resume's read of the history; failure
	// is "" when it was read (a gap included), else a Failure* reason.
	BrokerReplayed(took time.Duration, failure string)
	// BrokerReceived counts events the live feed received.
	BrokerReceived(n int)
	// BrokerLost counts events the live feed found removed before it
	// could read them.
	BrokerLost(n uint64)
}

// Failure reasons reported to Metrics.
const (
	FailureUnavailable = "unavailable" // not connected, no stream leader, refused
	FailureTimeout     = "timeout"     // sent, no answer: the outcome is unknown
	FailureError       = "error"       // anything else
)

type nopMetrics struct{}

func (nopMetrics) BrokerConnected(bool)                       {}
func (nopMetrics) BrokerPublished(int, time.Duration, string) {}
func (nopMetrics) BrokerReplayed(time.Duration, string)       {}
func (nopMetrics) BrokerReceived(int)                         {}
func (nopMetrics) BrokerLost(uint64)                          {}

// Broker stores events in JetStream. Create it with New; Close it when
// done (it owns the connection and the goroutine that starts delivery).
type Broker struct {
	opts Options
	nc   *nats.Conn
	js   jetstream.JetStream
	prop propagation.TextMapPropagator

	ctx       context.Context // ends when Close is called
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup // the goroutine Attach starts

	state   atomic.Pointer[jsStream] // nil until the stream is open
	feeding atomic.Bool              // the live feed's consumer runs
	// leaderSeen is when the stream's leader last answered the readiness
	// probe (Unix nanoseconds; 0: never).
	leaderSeen atomic.Int64
	warnings   *ratelog.Logger // failures that can repeat thousands of times a second

	mu   sync.Mutex // guards feed
	feed jetstream.MessagesContext

	// everyEvent: the feed reads every event (Options.EveryEvent, or a
	// stream that does not republish), so Interest has nothing to do.
	everyEvent   atomic.Bool
	interestMu   sync.Mutex             // guards interests
	interests    map[string]interestReq // topic -> latest Interest call not handled yet
	interestWake chan struct{}          // capacity 1: interests has something
	// dropped: the client dropped messages of a subscription (a slow
	// consumer); the live feed reads its topics back.
	dropped   atomic.Bool
	following atomic.Int64 // topics the live feed subscribes to
	// liveHead is the newest sequence the live feed handed the hub (an
	// event or a tick), once the hub has it.
	liveHead  atomic.Uint64
	catchUpMu sync.Mutex // guards catchUpTick; held while storing one
	// catchUpTick is the sequence of the newest tick CatchUp stored.
	catchUpTick uint64
	// liveDrop, for tests, loses republished messages as core NATS can.
	liveDrop atomic.Pointer[func(data []byte) bool]

	topicsMu sync.Mutex        // guards topics
	topics   map[string]*topic // subject -> publish state, see publish.go
}

// jsStream is what the broker knows of its JetStream stream once it is
// open. In this package "stream" alone always means that JetStream stream;
// a subscriber's event stream is the hub's business (package stream).
type jsStream struct {
	handle   jetstream.Stream
	epoch    string
	atomic   bool // the stream takes atomic batches
	replicas int  // copies of the stream: reads from any copy may lag
	// live is the prefix the stream republishes its subjects under (see
	// live.go); "" when it does not.
	live string
}

var _ stream.Broker = (*Broker)(nil)

// ErrClosed is returned after Close.
var ErrClosed = fmt.Errorf("nats broker closed: %w", stream.ErrUnavailable)

// errNotOpen: the stream has not been reached yet (NATS down at start).
var errNotOpen = fmt.Errorf("nats stream not reached yet: %w", stream.ErrUnavailable)

// New prepares the broker and starts connecting. It does not wait for the
// server: a service that starts before NATS is simply not ready (Ready)
// until the connection is up and the stream found (or created), and it
// keeps trying. Only settings that can never work (no URL, unreadable
// credentials) fail here.
func New(opts Options) (*Broker, error) {
	opts = opts.withDefaults()
	if opts.URL == "" {
		return nil, errors.New("nats: no server URL")
	}
	b := &Broker{opts: opts, prop: propagation.TraceContext{}, topics: map[string]*topic{},
		warnings: ratelog.New(opts.Log, 2, 10), interests: map[string]interestReq{},
		interestWake: make(chan struct{}, 1)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	log, m := opts.Log, opts.Metrics
	connOpts := []nats.Option{
		nats.Name("sse-service"),
		// Never buffer publishes while disconnected: a publish answered
		// 503 must not be stored later.
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(opts.RequestTimeout),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "server", nc.ConnectedUrlRedacted())
			m.BrokerConnected(true)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			m.BrokerConnected(false)
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			m.BrokerConnected(true)
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("nats reconnect attempt failed", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				b.dropped.Store(true)
			}
			b.warn("nats asynchronous error", "err", err)
		}),
	}
	if opts.CredsFile != "" {
		connOpts = append(connOpts, nats.UserCredentials(opts.CredsFile))
	}
	if opts.CAFile != "" {
		connOpts = append(connOpts, nats.RootCAs(opts.CAFile))
	}
	m.BrokerConnected(false)
	nc, err := nats.Connect(opts.URL, connOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", opts.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.nc, b.js = nc, js
	return b, nil
}

// Ready reports whether the broker can take publishes and serve resumes
// now: connected, the stream open, its leader answering (a stream without
// a leader, during an election or without quorum, stores nothing) and the
// live feed running.
func (b *Broker) Ready() bool {
	seen := time.Unix(0, b.leaderSeen.Load())
	return b.ctx.Err() == nil && b.nc.IsConnected() && b.state.Load() != nil && b.feeding.Load() &&
		time.Since(seen) < 3*probeEvery
}

// probeEvery is how often the readiness probe asks for the stream's leader.
const probeEvery = time.Second

// Attach implements stream.Broker: it starts, in the background, opening
// the stream (retrying until NATS answers), then the feed and the
// readiness probe.
func (b *Broker) Attach(f stream.Feed) {
	b.wg.Go(func() {
		st, head, ok := b.open()
		if !ok {
			return // closed before NATS answered
		}
		b.leaderSeen.Store(time.Now().UnixNano())
		if st.live == "" {
			b.everyEvent.Store(true)
			b.takeInterests()
			if !b.opts.EveryEvent {
				b.log().Warn("nats stream does not republish its messages: every replica reads every event; let the service manage the stream (SSE_NATS_MANAGE_STREAM=true) or add RePublish", "stream", b.opts.Stream)
			}
		}
		f.Start(stream.Position{Seq: head, ID: st.id(head)})
		b.wg.Go(b.probeLeader)
		if st.live == "" {
			b.runFeed(st, f, head+1)
		} else {
			b.runLive(st, f, head)
		}
	})
}

// probeLeader asks the stream's leader for a message that does not exist,
// every probeEvery, until the broker closes: an answer, even "not found",
// means the stream can store events now.
func (b *Broker) probeLeader() {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	// Two tokens after the prefix: never a topic's subject (base64url has
	// no '.'), so the leader always answers "no message".
	subject := b.opts.SubjectPrefix + ".probe.leader"
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(b.ctx, probeEvery)
		_, err := b.leaderGet(ctx, subject, 0, true)
		cancel()
		if err == nil {
			b.leaderSeen.Store(time.Now().UnixNano())
		} else if b.ctx.Err() == nil {
			b.warn("nats stream leader does not answer: not ready", "err", err)
		}
	}
}

// warn logs a failure that may repeat many times a second, rate-limited.
func (b *Broker) warn(msg string, args ...any) { b.warnings.Log(slog.LevelWarn, msg, args...) }

// open finds (or, with ManageStream, creates or updates) the stream,
// retrying with backoff until it succeeds or the broker closes. head is
// the stream's last sequence.
func (b *Broker) open() (st *jsStream, head uint64, ok bool) {
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		st, head, err := b.openStream()
		if err == nil {
			b.state.Store(st)
			b.log().Info("nats stream open", "stream", b.opts.Stream, "last_seq", head, "replicas", st.replicas)
			return st, head, true
		}
		// The first failures are expected while NATS starts with us; say
		// so at once, then again now and then.
		if attempt == 1 || attempt%20 == 0 {
			b.log().Warn("nats stream not reachable yet, not ready; retrying", "stream", b.opts.Stream, "attempt", attempt, "err", err)
		}
		select {
		case <-b.ctx.Done():
			return nil, 0, false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (b *Broker) openStream() (*jsStream, uint64, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.RequestTimeout)
	defer cancel()
	var s jetstream.Stream
	var err error
	if b.opts.ManageStream {
		s, err = b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:              b.opts.Stream,
			Subjects:          []string{b.opts.SubjectPrefix + ".>"},
			Storage:           jetstream.FileStorage,
			Replicas:          b.opts.Replicas,
			Retention:         jetstream.LimitsPolicy,
			Discard:           jetstream.DiscardOld,
			MaxMsgsPerSubject: int64(b.opts.HistorySize),
			MaxAge:            b.opts.HistoryTTL,
			Duplicates:        b.opts.IdempotencyWindow,
			// Batches are stored all or nothing (nats-server 2.12+).
			AllowAtomicPublish: true,
			// Resumes read history with direct gets, not consumers.
			AllowDirect: true,
			// Each replica subscribes to its topics' copies (live.go).
			RePublish: &jetstream.RePublish{Source: b.opts.SubjectPrefix + ".>", Destination: b.livePrefix() + ".>"},
		})
	} else {
		s, err = b.js.Stream(ctx, b.opts.Stream)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jetstream stream %s: %w", b.opts.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("jetstream stream %s info: %w", b.opts.Stream, err)
	}
	if !info.Config.AllowDirect {
		return nil, 0, fmt.Errorf("jetstream stream %s does not allow direct gets (allow_direct), which resumes need: update it, or let the service manage it (SSE_NATS_MANAGE_STREAM=true)", b.opts.Stream)
	}
	st := &jsStream{
		handle:   s,
		atomic:   info.Config.AllowAtomicPublish,
		replicas: info.Config.Replicas,
		epoch:    strconv.FormatInt(info.Created.UnixNano(), 36),
	}
	if live, ok := republishes(info.Config.RePublish, b.opts.SubjectPrefix); ok && !b.opts.EveryEvent {
		st.live = live
	}
	return st, info.State.LastSeq, nil
}

// livePrefix is where a stream the broker manages republishes its
// messages: <prefix>_live.<subject's last token>, which the stream's own
// subjects (<prefix>.>) cannot overlap.
func (b *Broker) livePrefix() string { return b.opts.SubjectPrefix + "_live" }

// opened returns the stream's state, or errNotOpen/ErrClosed.
func (b *Broker) opened() (*jsStream, error) {
	if b.ctx.Err() != nil {
		return nil, ErrClosed
	}
	st := b.state.Load()
	if st == nil {
		return nil, errNotOpen
	}
	return st, nil
}

func (b *Broker) log() *slog.Logger { return b.opts.Log }
func (b *Broker) metrics() Metrics  { return b.opts.Metrics }

func (b *Broker) subject(topic string) string {
	return b.opts.SubjectPrefix + "." + base64.RawURLEncoding.EncodeToString([]byte(topic))
}

// topic is the topic of a subject of the stream.
func (b *Broker) topic(subject string) (string, bool) {
	enc, ok := strings.CutPrefix(subject, b.opts.SubjectPrefix+".")
	if !ok {
		return "", false
	}
	t, err := base64.RawURLEncoding.DecodeString(enc)
	return string(t), err == nil
}

func (st *jsStream) id(seq uint64) string { return stream.FormatID(st.epoch, seq) }

// parseID returns the sequence an id of this stream names.
func (st *jsStream) parseID(id string) (uint64, *stream.GapError) {
	return stream.ParseID(id, st.epoch)
}

// Close stops delivery and closes the connection. Publishes and replays
// still running end at once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		b.mu.Lock() // the feed checks ctx under mu before it sets feed
		if b.feed != nil {
			b.feed.Stop()
		}
		b.mu.Unlock()
		b.wg.Wait()
		b.nc.Close()
	})
	return nil
}
