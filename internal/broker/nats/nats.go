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
package nats

import (
	"context"
	"encoding/base64"
	"encoding/json"
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
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// Header names on stored messages.
const (
	headerType  = "Sse-Event"
	headerMsgID = "Nats-Msg-Id" // JetStream's de-duplication
	// headerPrev holds the stream sequence of the previous event on the same
	// topic. A resume reads it on the first retained event after its id: a
	// previous event after the id that is no longer there means a gap.
	headerPrev = "Sse-Prev"
	// headerPrevBack replaces Sse-Prev on an event whose previous event on
	// the topic is in the same atomic batch: that one's sequence is this
	// event's minus the value (a batch is stored at consecutive sequences).
	headerPrevBack = "Sse-Prev-Back"

	headerExpectLastSubj = "Nats-Expected-Last-Subject-Sequence"
	headerBatchID        = "Nats-Batch-Id"
	headerBatchSeq       = "Nats-Batch-Sequence"
	headerBatchCommit    = "Nats-Batch-Commit"
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
	// retention below; otherwise the stream must exist.
	ManageStream bool
	// Retention, mapped onto the stream: MaxMsgsPerSubject, MaxAge and the
	// duplicate window. Defaults 1000, 1h, 2m.
	HistorySize       int
	HistoryTTL        time.Duration
	IdempotencyWindow time.Duration
	// RequestTimeout bounds each request to the server. Default 5s.
	RequestTimeout time.Duration
	// Log receives connection state changes; nil discards them.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = "SSE"
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = "sse"
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	o.HistorySize, o.HistoryTTL, o.IdempotencyWindow =
		stream.RetentionDefaults(o.HistorySize, o.HistoryTTL, o.IdempotencyWindow)
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Broker stores events in JetStream. Create it with New; Close it when
// done (it owns the connection and the delivery goroutine).
type Broker struct {
	opts   Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	epoch  string
	head   uint64 // last stream sequence when the broker started
	atomic bool   // the stream takes atomic batches
	prop   propagation.TextMapPropagator

	closed atomic.Bool
	stop   chan struct{}  // closed by Close
	wg     sync.WaitGroup // the delivery starter, see Attach

	mu      sync.Mutex // guards consume
	consume jetstream.ConsumeContext

	lastMu sync.Mutex        // guards last and stored
	last   map[string]uint64 // subject -> newest sequence ever seen (the Sse-Prev chain)
	stored map[string]uint64 // subject -> newest sequence the server holds, as last seen
}

var _ stream.Broker = (*Broker)(nil)

// ErrClosed is returned after Close.
var ErrClosed = fmt.Errorf("nats broker closed: %w", stream.ErrUnavailable)

// New connects, finds (or, with ManageStream, creates or updates) the
// stream and returns the broker.
func New(ctx context.Context, opts Options) (*Broker, error) {
	opts = opts.withDefaults()
	if opts.URL == "" {
		return nil, errors.New("nats: no server URL")
	}
	log := opts.Log
	connOpts := []nats.Option{
		nats.Name("sse-service"),
		// Never buffer publishes while disconnected: a publish answered
		// 503 must not be stored later.
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(opts.RequestTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted()) }),
	}
	if opts.CredsFile != "" {
		connOpts = append(connOpts, nats.UserCredentials(opts.CredsFile))
	}
	if opts.CAFile != "" {
		connOpts = append(connOpts, nats.RootCAs(opts.CAFile))
	}
	nc, err := nats.Connect(opts.URL, connOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", opts.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b := &Broker{opts: opts, nc: nc, js: js, prop: propagation.TraceContext{}, stop: make(chan struct{}), last: map[string]uint64{}, stored: map[string]uint64{}}
	if err := b.openStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

func (b *Broker) openStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
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
		})
	} else {
		s, err = b.js.Stream(ctx, b.opts.Stream)
	}
	if err != nil {
		return fmt.Errorf("jetstream stream %s: %w", b.opts.Stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("jetstream stream %s info: %w", b.opts.Stream, err)
	}
	b.stream = s
	b.atomic = info.Config.AllowAtomicPublish
	b.epoch = strconv.FormatInt(info.Created.UnixNano(), 36)
	b.head = info.State.LastSeq
	return nil
}

// Ready reports whether the broker can take publishes now.
func (b *Broker) Ready() bool { return !b.closed.Load() && b.nc.IsConnected() }

// ID is the id of the event with stream sequence seq.
func (b *Broker) ID(seq uint64) string { return b.id(seq) }

func (b *Broker) id(seq uint64) string { return stream.FormatID(b.epoch, seq) }

// noteLast records seq as the newest event on subject.
func (b *Broker) noteLast(subject string, seq uint64) {
	b.lastMu.Lock()
	defer b.lastMu.Unlock()
	b.last[subject] = max(b.last[subject], seq)
	b.stored[subject] = max(b.stored[subject], seq)
}

// lastOf returns the Sse-Prev value for the next event on subject, and the
// sequence the server should hold as the subject's last.
func (b *Broker) lastOf(subject string) (prev, stored uint64) {
	b.lastMu.Lock()
	defer b.lastMu.Unlock()
	return b.last[subject], b.stored[subject]
}

// refreshLast asks the server for the newest sequence it holds on subject.
// The chain keeps a newer one the server no longer holds (expired by age):
// the next event must still name it, so a resume from before it sees the gap.
func (b *Broker) refreshLast(ctx context.Context, subject string) error {
	var seq uint64
	m, err := b.stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return err
	default:
		seq = m.Sequence
	}
	b.lastMu.Lock()
	b.stored[subject] = seq
	b.last[subject] = max(b.last[subject], seq)
	b.lastMu.Unlock()
	return nil
}

func (b *Broker) subject(topic string) string {
	return b.opts.SubjectPrefix + "." + base64.RawURLEncoding.EncodeToString([]byte(topic))
}

func (b *Broker) topic(subject string) (string, bool) {
	enc, ok := strings.CutPrefix(subject, b.opts.SubjectPrefix+".")
	if !ok {
		return "", false
	}
	t, err := base64.RawURLEncoding.DecodeString(enc)
	return string(t), err == nil
}

// Attach implements stream.Broker: an ordered consumer from the sequence
// after the head delivers every new event, once, in stream order, from one
// goroutine; it follows reconnects by itself.
func (b *Broker) Attach(deliver func(*stream.Event)) stream.Position {
	b.wg.Go(func() { b.consumeFrom(deliver, b.head+1) })
	return stream.Position{Seq: b.head, ID: b.id(b.head)}
}

// consumeFrom starts the delivery consumer, retrying while the server is
// unreachable, until it runs or the broker closes.
func (b *Broker) consumeFrom(deliver func(*stream.Event), start uint64) {
	for !b.closed.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.RequestTimeout)
		cons, err := b.js.OrderedConsumer(ctx, b.opts.Stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{b.opts.SubjectPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    start,
		})
		cancel()
		if err == nil {
			var cc jetstream.ConsumeContext
			last := start - 1 // the stream sequence delivered last
			cc, err = cons.Consume(func(msg jetstream.Msg) {
				ev, ok := b.decode(msg)
				if !ok {
					return
				}
				// The consumer covers every subject of the stream, so a jump
				// in the sequence means events were removed (by the
				// per-subject limit or by age) before this replica read
				// them: say so rather than skip them silently.
				if ev.Seq > last+1 {
					deliver(stream.NewLossMarker(b.id(ev.Seq-1), ev.Seq-1, b.id(last)))
				}
				last = ev.Seq
				b.noteLast(msg.Subject(), ev.Seq)
				deliver(ev)
			})
			if err == nil {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.closed.Load() {
					cc.Stop()
					return
				}
				b.consume = cc
				return
			}
		}
		b.opts.Log.Warn("nats delivery consumer not running, retrying", "err", err)
		select {
		case <-b.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

// decode turns a stored message into an event.
func (b *Broker) decode(msg jetstream.Msg) (*stream.Event, bool) {
	md, err := msg.Metadata()
	if err != nil {
		return nil, false
	}
	return b.event(msg.Subject(), md.Sequence.Stream, msg.Headers(), msg.Data(), md.Timestamp)
}

func (b *Broker) event(subject string, seq uint64, h nats.Header, data []byte, ts time.Time) (*stream.Event, bool) {
	topic, ok := b.topic(subject)
	if !ok {
		return nil, false
	}
	m := stream.Message{Topic: topic, Type: h.Get(headerType), Data: string(data)}
	m.Trace = trace.SpanContextFromContext(b.prop.Extract(context.Background(), propagation.HeaderCarrier(h)))
	return stream.NewEvent(b.id(seq), seq, m, ts), true
}

// Publish implements stream.Broker. Each event is acknowledged by
// JetStream before the next is sent; 201 means stored.
func (b *Broker) Publish(ctx context.Context, msgs []stream.Message) ([]stream.Published, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	built := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		msg := nats.NewMsg(b.subject(m.Topic))
		msg.Data = []byte(m.Data)
		if m.Type != "" {
			msg.Header.Set(headerType, m.Type)
		}
		if m.IdempotencyKey != "" {
			// The duplicate window is per stream: the topic makes keys
			// per topic ('|' cannot be in a topic).
			msg.Header.Set(headerMsgID, m.Topic+"|"+m.IdempotencyKey)
		}
		if m.Trace.IsValid() {
			b.prop.Inject(trace.ContextWithSpanContext(context.Background(), m.Trace), propagation.HeaderCarrier(msg.Header))
		}
		built[i] = msg
	}
	if len(built) > 1 && b.atomic {
		// All or nothing, so a 503 never leaves part of a batch stored.
		out, err := b.publishAtomic(ctx, built)
		if !errors.Is(err, errBatchRepeated) {
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("publish batch of %d to %s: %w: %w", len(built), b.opts.Stream, stream.ErrUnavailable, err)
			}
			return out, nil
		}
		// A batch repeated with its idempotency key: JetStream refuses it
		// whole, and single publishes answer each repeat with its first id.
		for _, msg := range built {
			for _, h := range []string{headerBatchID, headerBatchSeq, headerBatchCommit, headerPrevBack} {
				msg.Header.Del(h)
			}
		}
	}
	out := make([]stream.Published, len(msgs))
	for i, msg := range built {
		ack, err := b.publishChained(ctx, msg)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("publish to %s (event %d of %d): %w: %w", b.opts.Stream, i+1, len(msgs), stream.ErrUnavailable, err)
		}
		out[i] = stream.Published{ID: b.id(ack.Sequence), Duplicate: ack.Duplicate}
	}
	return out, nil
}

// errBatchRepeated: an atomic batch holds an idempotency key already stored.
var errBatchRepeated = errors.New("batch repeats stored idempotency keys")

// batchAck is JetStream's answer to the commit of an atomic batch.
type batchAck struct {
	Sequence uint64 `json:"seq"`
	Count    int    `json:"count"`
	Error    *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// errCodeBatchDuplicate is JetStream's "atomic publish batch contains
// duplicate message id".
const errCodeBatchDuplicate = 10201

// publishAtomic stores msgs as one atomic batch and returns their ids. The
// Sse-Prev chain holds across it: the first event of each topic names the
// topic's previous event (checked like a single publish), later ones name
// theirs in the batch by distance.
func (b *Broker) publishAtomic(ctx context.Context, msgs []*nats.Msg) ([]stream.Published, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		batch := nuid.Next()
		lastAt := map[string]int{} // subject -> index of its latest message in the batch
		var reply *nats.Msg
		for i, msg := range msgs {
			h := msg.Header
			for _, k := range []string{headerPrev, headerPrevBack, headerExpectLastSubj, headerBatchCommit} {
				h.Del(k)
			}
			h.Set(headerBatchID, batch)
			h.Set(headerBatchSeq, strconv.Itoa(i+1))
			if j, ok := lastAt[msg.Subject]; ok {
				h.Set(headerPrevBack, strconv.Itoa(i-j))
			} else {
				prev, stored := b.lastOf(msg.Subject)
				h.Set(headerPrev, strconv.FormatUint(prev, 10))
				h.Set(headerExpectLastSubj, strconv.FormatUint(stored, 10))
			}
			lastAt[msg.Subject] = i
			var err error
			if i < len(msgs)-1 {
				err = b.nc.PublishMsg(msg)
			} else {
				h.Set(headerBatchCommit, "1")
				reply, err = b.nc.RequestMsgWithContext(ctx, msg)
			}
			if err != nil {
				return nil, err
			}
		}
		var ack batchAck
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return nil, fmt.Errorf("batch ack: %w", err)
		}
		if ack.Error != nil {
			switch ack.Error.ErrCode {
			case int(jetstream.JSErrCodeStreamWrongLastSequence), int(jetstream.JSErrCodeStreamWrongLastSequenceConstant):
				if attempt >= 20 {
					return nil, fmt.Errorf("batch: %s", ack.Error.Description)
				}
				for subj := range lastAt {
					if err := b.refreshLast(ctx, subj); err != nil {
						return nil, err
					}
				}
				continue
			case errCodeBatchDuplicate:
				return nil, errBatchRepeated
			}
			return nil, fmt.Errorf("batch: %s (%d)", ack.Error.Description, ack.Error.ErrCode)
		}
		if ack.Count != len(msgs) || ack.Sequence < uint64(len(msgs)) {
			return nil, fmt.Errorf("batch ack for %d of %d events at %d", ack.Count, len(msgs), ack.Sequence)
		}
		out := make([]stream.Published, len(msgs))
		first := ack.Sequence - uint64(len(msgs)-1)
		for i, msg := range msgs {
			out[i] = stream.Published{ID: b.id(first + uint64(i))}
			b.noteLast(msg.Subject, first+uint64(i))
		}
		return out, nil
	}
}

// publishChained publishes msg with the sequence of the topic's previous
// event in its Sse-Prev header, kept exact by JetStream's expected last
// subject sequence check: when another publish (on any replica) got in
// first, the newest sequence is fetched and the publish tried again. One
// residual blind spot: a replica that starts after a topic's last events
// expired, and publishes on it first, cannot name them.
func (b *Broker) publishChained(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		prev, stored := b.lastOf(msg.Subject)
		msg.Header.Set(headerPrev, strconv.FormatUint(prev, 10))
		ack, err := b.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(b.opts.Stream), jetstream.WithExpectLastSequencePerSubject(stored))
		if err == nil {
			b.noteLast(msg.Subject, ack.Sequence)
			return ack, nil
		}
		var apiErr *jetstream.APIError
		if attempt >= 20 || !errors.As(err, &apiErr) ||
			(apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return nil, err
		}
		if err := b.refreshLast(ctx, msg.Subject); err != nil {
			return nil, err
		}
	}
}

// Replay implements stream.Broker.
func (b *Broker) Replay(ctx context.Context, topics []string, lastEventID string, upTo uint64, fn func(*stream.Event) error) error {
	if b.closed.Load() {
		return ErrClosed
	}
	after, gap := b.parseID(lastEventID)
	if gap != nil {
		return gap
	}
	if after > upTo {
		return &stream.GapError{LastEventID: lastEventID, Reason: stream.GapFuture}
	}
	if after == upTo {
		return nil
	}
	subjects := make([]string, len(topics))
	for i, t := range topics {
		subjects[i] = b.subject(t)
	}
	if err := b.checkRetained(ctx, subjects, lastEventID, after); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	cons, err := b.js.OrderedConsumer(cctx, b.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	})
	if err != nil {
		return fmt.Errorf("replay consumer: %w: %w", stream.ErrUnavailable, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("replay fetch: %w: %w", stream.ErrUnavailable, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > upTo {
				return nil
			}
			if ev, ok := b.decode(msg); ok {
				if err := fn(ev); err != nil {
					return err
				}
			}
			if md.Sequence.Stream == upTo || md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("replay fetch: %w: %w", stream.ErrUnavailable, err)
		}
		if n == 0 {
			return nil // nothing on these topics after the id
		}
	}
}

// checkRetained reports a gap when events after `after` on subjects were
// removed. The Sse-Prev chain shows it exactly whenever an event after the
// id is still there: if the first retained event after the id on a subject
// names a previous event that is also after the id, that one is gone
// (removed by the per-subject count or by age). When nothing after the id is
// left on a subject, only age can have removed it all (the count limit keeps
// the newest), and age removes from the head of the stream: an id below the
// stream's first sequence then counts as a gap (conservatively).
func (b *Broker) checkRetained(ctx context.Context, subjects []string, lastEventID string, after uint64) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	expired := &stream.GapError{LastEventID: lastEventID, Reason: stream.GapExpired}
	var firstSeq uint64 // of the stream, fetched when needed
	for _, subj := range subjects {
		next, err := b.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			if firstSeq == 0 {
				info, err := b.stream.Info(ctx)
				if err != nil {
					return fmt.Errorf("stream info: %w: %w", stream.ErrUnavailable, err)
				}
				firstSeq = info.State.FirstSeq
			}
			if after+1 < firstSeq {
				return expired
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("next message of %s: %w: %w", subj, stream.ErrUnavailable, err)
		}
		prev, err := strconv.ParseUint(next.Header.Get(headerPrev), 10, 64)
		if back := next.Header.Get(headerPrevBack); back != "" {
			var n uint64
			n, err = strconv.ParseUint(back, 10, 64)
			prev = next.Sequence - n
		}
		if err != nil || prev > after {
			return expired
		}
	}
	return nil
}

// parseID returns the Seq an id of this broker names.
func (b *Broker) parseID(id string) (uint64, *stream.GapError) { return stream.ParseID(id, b.epoch) }

// Close stops delivery and closes the connection.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.stop)
	b.wg.Wait()
	b.mu.Lock()
	if b.consume != nil {
		b.consume.Stop()
	}
	b.mu.Unlock()
	b.nc.Close()
	return nil
}
