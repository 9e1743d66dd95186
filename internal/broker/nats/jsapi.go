package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The few JetStream API requests nats.go has no call for: publishes whose
// failures must be told apart precisely, batched direct gets, and reads
// that must come from the stream's leader (nats.go's GetMsg reads from any
// copy once a stream allows direct gets).

// Header names on stored messages.
const (
	headerType  = "Sse-Event"
	headerMsgID = "Nats-Msg-Id" // JetStream's de-duplication
	// headerPrev holds the stream sequence of the newest event the server
	// held on the same topic when this one was stored (0: none). A resume
	// reads it on the first retained event after its id: a previous event
	// after the id that is no longer there means a gap.
	headerPrev = "Sse-Prev"
	// headerPrevBack replaces Sse-Prev on an event whose previous event on
	// the topic is in the same atomic batch: that one's sequence is this
	// event's minus the value (a batch is stored at consecutive sequences).
	headerPrevBack = "Sse-Prev-Back"
	// headerFloor is set when Sse-Prev is 0 (the server held no event on
	// the topic): the stream's first sequence at that moment. Every event
	// of the topic removed before was below it.
	headerFloor = "Sse-Floor"

	headerExpectLastSubj = "Nats-Expected-Last-Subject-Sequence"
	headerNumPending     = "Nats-Num-Pending" // on a direct get batch's end
	headerBatchID        = "Nats-Batch-Id"
	headerBatchSeq       = "Nats-Batch-Sequence"
	headerBatchCommit    = "Nats-Batch-Commit"

	// headerLastSeq, on a republished message, is the sequence of the
	// previous message on its subject the server held (0: none).
	headerLastSeq = "Nats-Last-Sequence"
)

// JetStream error codes the broker acts on.
const (
	errCodeWrongLastSeq         = 10071 // "wrong last sequence: N"
	errCodeWrongLastSeqConstant = 10164 // the same, without N (a publish of the subject in flight)
	errCodeBatchDuplicate       = 10201 // an atomic batch holds a stored message id
	errCodeBatchTooManyInflight = 10210
	errCodeNoMessageFound       = 10037
)

// apiError is an error answer of the JetStream API.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream: %s (%d)", e.Description, e.ErrCode)
}

// lastSeq is the sequence a "wrong last sequence: N" answer names.
func (e *apiError) lastSeq() (uint64, bool) {
	if e.ErrCode != errCodeWrongLastSeq {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(e.Description, "wrong last sequence: "), 10, 64)
	return n, err == nil
}

// pubAck is JetStream's answer to a publish or an atomic batch's commit.
type pubAck struct {
	Sequence  uint64    `json:"seq"`
	Duplicate bool      `json:"duplicate"`
	Count     int       `json:"count"` // events in a committed batch
	Error     *apiError `json:"error"`
}

// request sends msg and decodes the publish answer. An error that is not an
// *apiError says nothing reached the stream (errNotSent) or that the
// outcome is unknown (errNoAnswer).
func (b *Broker) request(ctx context.Context, msg *nats.Msg) (*pubAck, error) {
	reply, err := b.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, classifySendError(err)
	}
	var ack pubAck
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return nil, fmt.Errorf("%w: undecodable answer %q", errNoAnswer, reply.Data)
	}
	if ack.Error != nil {
		return nil, ack.Error
	}
	return &ack, nil
}

var (
	// errNotSent: the request never reached a stream (not connected, no
	// stream leader to answer): nothing was stored.
	errNotSent = errors.New("not sent")
	// errNoAnswer: the request went out and no answer came: it may or may
	// not have been stored.
	errNoAnswer = errors.New("no answer")
)

// classifySendError sorts a failed request into errNotSent or errNoAnswer.
func classifySendError(err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrInvalidConnection),
		errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	return fmt.Errorf("%w: %w", errNoAnswer, err)
}

// storedMsg is one message read from the stream.
type storedMsg struct {
	subject string
	seq     uint64
	header  nats.Header
	data    []byte
	time    time.Time
}

// leaderGet reads one message through the stream's leader, which always
// has every acknowledged message: the last on subject (last) or the first
// on subject at or after seq. It returns nil, nil when there is none.
func (b *Broker) leaderGet(ctx context.Context, subject string, seq uint64, last bool) (*storedMsg, error) {
	req := map[string]any{"next_by_subj": subject, "seq": seq}
	if last {
		req = map[string]any{"last_by_subj": subject}
	}
	body, _ := json.Marshal(req) // cannot fail
	reply, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+b.opts.Stream, body)
	if err != nil {
		return nil, fmt.Errorf("get %s from the stream leader: %w", subject, classifySendError(err))
	}
	var resp struct {
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("get %s from the stream leader: %q: %w", subject, reply.Data, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessageFound:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("get %s from the stream leader: %w", subject, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("get %s from the stream leader: empty answer", subject)
	}
	m := resp.Message
	sm := &storedMsg{subject: m.Subject, seq: m.Sequence, data: m.Data, time: m.Time}
	if len(m.Header) > 0 {
		if sm.header, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("get %s from the stream leader: headers: %w", subject, err)
		}
	}
	return sm, nil
}

// firstSeq is the stream's first sequence (at least 1), from its leader.
func (b *Broker) firstSeq(ctx context.Context, st *jsStream) (uint64, error) {
	info, err := st.handle.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", classifySendError(err))
	}
	return max(info.State.FirstSeq, 1), nil
}

// directReader reads batches of stored messages with direct gets: any
// copy of the stream answers, with no consumer on the server. It owns one
// inbox subscription; Close it when done.
type directReader struct {
	b     *Broker
	sub   *nats.Subscription
	inbox string
	n     int // requests sent, to tell late answers of an earlier one apart
}

func (b *Broker) newDirectReader() (*directReader, error) {
	inbox := b.nc.NewInbox()
	sub, err := b.nc.SubscribeSync(inbox + ".*")
	if err != nil {
		return nil, fmt.Errorf("direct get inbox: %w", classifySendError(err))
	}
	return &directReader{b: b, sub: sub, inbox: inbox}, nil
}

func (r *directReader) Close() { _ = r.sub.Unsubscribe() }

// maxDirectBytes bounds one batch answer, so a replay of large events
// holds at most this much per topic.
const maxDirectBytes = 1 << 20

// batch returns up to n messages on subject with sequences from seq on,
// in order, and more=false when the answering copy holds none after them.
func (r *directReader) batch(ctx context.Context, subject string, seq uint64, n int) (msgs []storedMsg, more bool, err error) {
	r.n++
	reply := r.inbox + "." + strconv.Itoa(r.n)
	body, _ := json.Marshal(map[string]any{"seq": seq, "next_by_subj": subject, "batch": n, "max_bytes": maxDirectBytes})
	if err := r.b.nc.PublishRequest("$JS.API.DIRECT.GET."+r.b.opts.Stream, reply, body); err != nil {
		return nil, false, fmt.Errorf("direct get %s: %w", subject, classifySendError(err))
	}
	ctx, cancel := context.WithTimeout(ctx, r.b.opts.RequestTimeout)
	defer cancel()
	for {
		m, err := r.sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, false, ctx.Err()
			}
			return nil, false, fmt.Errorf("direct get %s: %w", subject, classifySendError(err))
		}
		if m.Subject != reply {
			continue // a late answer to an earlier request
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			np, _ := strconv.ParseUint(m.Header.Get(headerNumPending), 10, 64)
			return msgs, np > 0, nil
		case "404":
			return msgs, false, nil
		default:
			return nil, false, fmt.Errorf("direct get %s: status %s %s", subject, status, m.Header.Get("Description"))
		}
		sm, err := parseDirect(m)
		if err != nil {
			return nil, false, fmt.Errorf("direct get %s: %w", subject, err)
		}
		msgs = append(msgs, sm)
	}
}

// parseDirect reads a direct get answer's message.
func parseDirect(m *nats.Msg) (storedMsg, error) {
	h := m.Header
	seq, err := strconv.ParseUint(h.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return storedMsg{}, fmt.Errorf("sequence header %q", h.Get(jetstream.SequenceHeader))
	}
	ts, err := time.Parse(time.RFC3339Nano, h.Get(jetstream.TimeStampHeaer))
	if err != nil {
		return storedMsg{}, fmt.Errorf("time stamp header %q", h.Get(jetstream.TimeStampHeaer))
	}
	return storedMsg{subject: h.Get(jetstream.SubjectHeader), seq: seq, header: h, data: m.Data, time: ts}, nil
}
