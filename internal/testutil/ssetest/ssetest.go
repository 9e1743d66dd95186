// Package ssetest is the SSE client of the tests. Its Parser follows the
// standard (WHATWG HTML, "Server-sent events"), and two clients are built
// on it:
//   - EventSource behaves as a browser's: it sends Last-Event-ID when it
//     reconnects, waits the retry: delay the server asked for, and gives up
//     for good on any answer but a 200 text/event-stream;
//   - Stream is one subscription on a connection of the test's own, read
//     event by event with a deadline, or as raw bytes where a test checks
//     the exact framing.
//
// Only tests import it.
package ssetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one dispatched event. Type is "message" when the stream named
// none; LastEventID is the event's lastEventId (the id buffer when it was
// dispatched); ID is the id: field of the event itself, "" when it had
// none (what a test of the wire checks: a client only sees LastEventID).
type Event struct {
	Type        string
	Data        string
	LastEventID string
	ID          string
}

// Parser turns a byte stream into events by the standard's rules: lines end
// in CR, LF or CRLF; a blank line dispatches; an event with no data is not
// dispatched (but its id still counts).
type Parser struct {
	// LastEventID is the last event id buffer: what a reconnect sends.
	LastEventID string
	// Retry is the last valid retry: value (0: none seen).
	Retry time.Duration
	// OnComment, when set, is called with the text of each comment line
	// (after its colon and one space), which the standard ignores.
	OnComment func(text string)

	data      bytes.Buffer
	typ       string
	id        string // this event's own id: field
	sawData   bool
	pendingCR bool // the previous chunk ended in CR: a following LF is part of it
	line      []byte
	head      []byte // the first bytes, until a byte order mark is ruled out
	bomDone   bool
}

// Feed parses p and calls dispatch for each complete event.
func (p *Parser) Feed(b []byte, dispatch func(Event)) {
	if !p.bomDone { // a byte order mark may arrive a byte at a time
		const bom = "\xEF\xBB\xBF"
		p.head = append(p.head, b...)
		if len(p.head) < len(bom) && strings.HasPrefix(bom, string(p.head)) {
			return
		}
		b = bytes.TrimPrefix(p.head, []byte(bom))
		p.bomDone = true
	}
	for _, c := range b {
		if p.pendingCR {
			p.pendingCR = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\r':
			p.pendingCR = true
			p.processLine(dispatch)
		case '\n':
			p.processLine(dispatch)
		default:
			p.line = append(p.line, c)
		}
	}
}

func (p *Parser) processLine(dispatch func(Event)) {
	line := p.line
	p.line = p.line[:0]
	if len(line) == 0 {
		p.dispatch(dispatch)
		return
	}
	if line[0] == ':' {
		if p.OnComment != nil {
			p.OnComment(string(bytes.TrimPrefix(line[1:], []byte(" "))))
		}
		return
	}
	field, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(field) {
	case "event":
		p.typ = string(value)
	case "data":
		p.data.Write(value)
		p.data.WriteByte('\n')
		p.sawData = true
	case "id":
		if !bytes.ContainsRune(value, 0) {
			p.LastEventID = string(value)
			p.id = string(value)
		}
	case "retry":
		if ms, err := strconv.ParseUint(string(value), 10, 63); err == nil && len(value) > 0 && isDigits(value) {
			p.Retry = time.Duration(ms) * time.Millisecond
		}
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (p *Parser) dispatch(dispatch func(Event)) {
	typ, id := p.typ, p.id
	p.typ, p.id = "", ""
	if !p.sawData {
		p.data.Reset()
		return
	}
	data := strings.TrimSuffix(p.data.String(), "\n")
	p.data.Reset()
	p.sawData = false
	if typ == "" {
		typ = "message"
	}
	dispatch(Event{Type: typ, Data: data, LastEventID: p.LastEventID, ID: id})
}

// Options configure an EventSource.
type Options struct {
	// Client makes the requests; nil means a client with no timeout.
	Client *http.Client
	// Header is added to every request.
	Header http.Header
	// Retry is the reconnection time until the server sends one.
	// Default 3s, as browsers.
	Retry time.Duration
	// OnEvent is called, from the reader goroutine, with each event.
	OnEvent func(Event)
	// OnOpen, when set, is called with each response that opened the
	// stream.
	OnOpen func(*http.Response)
}

// EventSource reads a stream and reconnects like a browser's EventSource
// until Close, or until it fails for good (Err then says why).
type EventSource struct {
	url    string
	opts   Options
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards below
	opens  int
	err    error // why it failed for good; nil while it runs or after Close
	parser Parser
}

// Open starts an EventSource on url (with lastEventID as its starting id,
// as a polyfill's ?lastEventId would be, when not empty).
func Open(url, lastEventID string, opts Options) *EventSource {
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Retry == 0 {
		opts.Retry = 3 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	es := &EventSource{url: url, opts: opts, cancel: cancel, done: make(chan struct{})}
	es.parser.LastEventID = lastEventID
	go es.run(ctx)
	return es
}

// ErrFailed wraps why an EventSource stopped for good.
var ErrFailed = errors.New("eventsource failed")

func (es *EventSource) run(ctx context.Context) {
	defer close(es.done)
	for {
		err := es.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrFailed) {
			es.mu.Lock()
			es.err = err
			es.mu.Unlock()
			return
		}
		es.mu.Lock()
		wait := es.parser.Retry
		es.mu.Unlock()
		if wait == 0 {
			wait = es.opts.Retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// connect makes one request and reads its stream until it ends. An error
// wrapping ErrFailed means no reconnect.
func (es *EventSource) connect(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, es.url, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	for k, v := range es.opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	es.mu.Lock()
	if id := es.parser.LastEventID; id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	es.mu.Unlock()
	resp, err := es.opts.Client.Do(req)
	if err != nil {
		return err // a network error: reconnect
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%w: %s %q: %s", ErrFailed, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	es.mu.Lock()
	es.opens++
	es.mu.Unlock()
	if es.opts.OnOpen != nil {
		es.opts.OnOpen(resp)
	}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	buf := make([]byte, 16<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			es.mu.Lock()
			var evs []Event
			es.parser.Feed(buf[:n], func(ev Event) { evs = append(evs, ev) })
			es.mu.Unlock()
			if es.opts.OnEvent != nil {
				for _, ev := range evs {
					es.opts.OnEvent(ev)
				}
			}
		}
		if err != nil {
			return err // the end or a break: reconnect
		}
	}
}

// Opens is how many times the stream opened (1 + reconnects that got in).
func (es *EventSource) Opens() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.opens
}

// Err is why the EventSource stopped for good (nil while it runs).
func (es *EventSource) Err() error {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.err
}

// LastEventID is the id a reconnect would send now.
func (es *EventSource) LastEventID() string {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.parser.LastEventID
}

// Close stops the EventSource and waits for its goroutine.
func (es *EventSource) Close() {
	es.cancel()
	<-es.done
}
