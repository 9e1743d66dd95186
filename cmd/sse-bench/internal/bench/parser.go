package bench

import (
	"bytes"
	"math"
	"time"
)

// LatencySink collects the latencies measured by the parsers of one
// goroutine (it is not safe for concurrent use).
type LatencySink struct {
	// RecordFrom: only events published at or after this time (Unix
	// nanoseconds) have their latency recorded.
	RecordFrom int64
	Histogram
}

// NewLatencySink returns a sink that records every event.
func NewLatencySink() *LatencySink {
	return &LatencySink{RecordFrom: math.MinInt64}
}

// headSize is how much of a line the parser keeps when the line is split
// across reads. Only the start of a line matters: the field name and the
// payload header (6+MinPayloadSize bytes); the rest is skipped.
const headSize = 64

// StreamStats counts what one stream received.
type StreamStats struct {
	// Events is the number of sse-bench events (data parsed as a payload).
	Events int64
	// Foreign is the number of other events (e.g. the service's own
	// sse-gap notices, or events someone else published on the topic).
	Foreign int64
	// GapNotices counts events of type sse-gap: the service telling the
	// client it missed events.
	GapNotices int64
	Heartbeats int64
	Bytes      int64
	// Gaps is the number of sequence numbers skipped; Duplicates the number
	// of events whose sequence number was not above the last one seen on
	// its lane.
	Gaps       int64
	Duplicates int64
}

// Add adds o's counts to s.
func (s *StreamStats) Add(o StreamStats) {
	s.Events += o.Events
	s.Foreign += o.Foreign
	s.GapNotices += o.GapNotices
	s.Heartbeats += o.Heartbeats
	s.Bytes += o.Bytes
	s.Gaps += o.Gaps
	s.Duplicates += o.Duplicates
}

// Parser is an incremental, allocation-free parser of a text/event-stream
// body carrying sse-bench payloads. Feed it the body in chunks of any size;
// lines may be split anywhere. Lines end in LF or CRLF (a lone CR, which the
// SSE spec also allows, is not treated as a line end).
//
// For every event it checks the sequence number against the event's lane and
// records into its sink the latency from the publish timestamp to the time
// of the read that completed the event. The zero value is not ready: use
// NewParser.
type Parser struct {
	Stats StreamStats

	latency *LatencySink
	lanes   [MaxLanes]seqTracker

	// the line split across reads so far
	partial     [headSize]byte
	partialHead int  // bytes kept in partial
	partialLen  int  // length of the whole partial line
	partialLast byte // its last byte

	// the event being parsed
	hasData bool
	isGap   bool
	ok      bool // the first data line was a payload
	cur     payload
}

// NewParser returns a parser that records latencies into sink; with a nil
// sink it records none.
func NewParser(sink *LatencySink) *Parser {
	return &Parser{latency: sink}
}

// Feed parses the next chunk of the body, read at now (Unix nanoseconds).
func (p *Parser) Feed(chunk []byte, now int64) {
	p.Stats.Bytes += int64(len(chunk))
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			p.appendPartial(chunk)
			return
		}
		if p.partialLen > 0 {
			p.appendPartial(chunk[:i])
			p.line(p.partial[:p.partialHead], p.partialLen, p.partialLast, now)
			p.partialHead, p.partialLen = 0, 0
		} else {
			var last byte
			if i > 0 {
				last = chunk[i-1]
			}
			p.line(chunk[:min(i, headSize)], i, last, now)
		}
		chunk = chunk[i+1:]
	}
}

// appendPartial keeps the start of a line that continues in the next read.
func (p *Parser) appendPartial(b []byte) {
	if len(b) == 0 {
		return
	}
	p.partialHead += copy(p.partial[p.partialHead:], b)
	p.partialLen += len(b)
	p.partialLast = b[len(b)-1]
}

// line handles one line without its LF: head is its first bytes (all of it
// when n <= headSize), n its full length and last its last byte.
func (p *Parser) line(head []byte, n int, last byte, now int64) {
	if n > 0 && last == '\r' {
		n--
		head = head[:min(len(head), n)]
	}
	if n == 0 {
		p.dispatch(now)
		return
	}
	switch head[0] {
	case ':':
		if n == len(": heartbeat") && string(head) == ": heartbeat" ||
			n == len(":heartbeat") && string(head) == ":heartbeat" {
			p.Stats.Heartbeats++
		}
	case 'd':
		if v, ok := fieldValue(head, n, "data"); ok && !p.hasData {
			p.hasData = true
			p.cur, p.ok = parsePayload(v)
		} else if ok {
			p.hasData = true // a continuation line of multi-line data
		}
	case 'e':
		if v, ok := fieldValue(head, n, "event"); ok {
			p.isGap = bytes.HasPrefix(v, []byte("sse-gap"))
		}
	}
}

// fieldValue returns the value of a "name: value" line whose first bytes are
// head and whose length is n, if the line's field is name.
func fieldValue(head []byte, n int, name string) ([]byte, bool) {
	if len(head) < len(name) || string(head[:len(name)]) != name {
		return nil, false
	}
	if n == len(name) {
		return nil, true // "data" alone: empty value
	}
	if head[len(name)] != ':' {
		return nil, false
	}
	v := head[len(name)+1:]
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return v, true
}

// dispatch ends the current event at a blank line.
func (p *Parser) dispatch(now int64) {
	if !p.hasData {
		p.isGap = false
		return
	}
	switch {
	case p.ok:
		p.Stats.Events++
		gaps, dup := p.lanes[p.cur.lane].observe(p.cur.seq)
		p.Stats.Gaps += gaps
		if dup {
			p.Stats.Duplicates++
		}
		if p.latency != nil && p.cur.ts >= p.latency.RecordFrom {
			p.latency.Record(time.Duration(now - p.cur.ts))
		}
	case p.isGap:
		p.Stats.Foreign++
		p.Stats.GapNotices++
	default:
		p.Stats.Foreign++
	}
	p.hasData, p.isGap, p.ok = false, false, false
}

// seqTracker checks one lane's sequence numbers: it expects them to rise by
// exactly one from the first it sees.
type seqTracker struct {
	next uint64 // 0: nothing seen yet
}

// observe returns how many sequence numbers were skipped before seq and
// whether seq is a duplicate (not above the last one seen).
func (t *seqTracker) observe(seq uint64) (gaps int64, dup bool) {
	switch {
	case t.next == 0 || seq == t.next:
	case seq > t.next:
		gaps = int64(seq - t.next)
	default:
		return 0, true
	}
	t.next = seq + 1
	return gaps, false
}
