package ssebench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// connectTimeout bounds dialing a stream and reading its response header.
const connectTimeout = 10 * time.Second

// stream is one SSE subscription. Its reader goroutine owns parser; the
// atomic events counter mirrors parser.Stats.Events once per read, so the
// run can take window snapshots without touching the parser.
type stream struct {
	parser *Parser
	events atomic.Int64
	// dropErr is why the stream ended before the run closed it; set by the
	// reader goroutine before it exits.
	dropErr error
}

// streamSet opens and reads all streams of a run.
type streamSet struct {
	targets    []Target
	sources    []net.IP
	topic      string
	readBuffer int
	// recordFrom is read once per chunk into each parser's RecordFrom.
	recordFrom *atomic.Int64

	// closeCtx ends every stream when cancelled.
	closeCtx context.Context
	readers  sync.WaitGroup

	mu        sync.Mutex
	streams   []*stream
	failed    int
	firstFail error
}

// open dials n streams with at most dials connects in flight and returns
// when every attempt has succeeded or failed (or ctx is done). Connected
// streams keep reading until closeCtx is cancelled.
func (s *streamSet) open(ctx context.Context, n, dials int) {
	requests := make([][]byte, len(s.targets))
	for i, t := range s.targets {
		requests[i] = subscribeRequest(t, s.topic)
	}
	sem := make(chan struct{}, dials)
	var pending sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			s.fail(n-i, fmt.Errorf("interrupted: %w", ctx.Err()))
			pending.Wait()
			return
		}
		pending.Add(1)
		go func() {
			st, conn, body := s.connect(ctx, i, requests)
			<-sem
			pending.Done()
			if st != nil {
				s.read(st, conn, body) // runs until the stream ends
			}
		}()
	}
	pending.Wait()
}

// connect opens the i-th stream and registers it, or records the failure.
// Either is done before it returns, so that counts are final once every
// connect has returned.
func (s *streamSet) connect(ctx context.Context, i int, requests [][]byte) (*stream, net.Conn, io.Reader) {
	t := i % len(s.targets)
	conn, body, err := s.dial(ctx, s.targets[t], s.source(i, s.targets[t]), requests[t])
	if err != nil {
		s.fail(1, err)
		return nil, nil, nil
	}
	st := &stream{parser: NewParser()}
	s.readers.Add(1)
	s.mu.Lock()
	s.streams = append(s.streams, st)
	s.mu.Unlock()
	return st, conn, body
}

// fail records n streams that could not be opened.
func (s *streamSet) fail(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed += n
	if s.firstFail == nil {
		s.firstFail = err
	}
}

// source returns the local address for the i-th stream to t, or nil to
// let the kernel choose (no sources, or none of t's address family).
func (s *streamSet) source(i int, t Target) *net.TCPAddr {
	if len(s.sources) == 0 {
		return nil
	}
	ip := s.sources[i%len(s.sources)]
	if (ip.To4() == nil) != (t.Addr.IP.To4() == nil) {
		return nil
	}
	return &net.TCPAddr{IP: ip}
}

// subscribeRequest returns the raw HTTP/1.1 request that subscribes to
// topic on t. It is the same for every stream to t.
func subscribeRequest(t Target, topic string) []byte {
	return fmt.Appendf(nil, "GET %s/v1/events?topic=%s HTTP/1.1\r\n"+
		"Host: %s\r\n"+
		"Accept: text/event-stream\r\n"+
		"Cache-Control: no-cache\r\n"+
		"User-Agent: sse-bench\r\n\r\n",
		t.Path, url.QueryEscape(topic), t.Host)
}

// dial connects one stream and reads its response header. It uses a raw
// connection rather than http.Client: one goroutine and one small bufio
// buffer per stream instead of a Transport's three goroutines and two
// buffers, while net/http still parses the response and de-chunks the body.
func (s *streamSet) dial(ctx context.Context, t Target, local *net.TCPAddr, request []byte) (net.Conn, io.ReadCloser, error) {
	d := net.Dialer{LocalAddr: local, Timeout: connectTimeout}
	conn, err := d.DialContext(ctx, "tcp", t.Addr.String())
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", t.Addr, err)
	}
	resp, err := subscribe(ctx, conn, request)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("subscribe on %s from %s: %w", t.Base, conn.LocalAddr(), err)
	}
	return conn, resp.Body, nil
}

// subscribe sends request on conn and checks the response is an event
// stream.
func subscribe(ctx context.Context, conn net.Conn, request []byte) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := conn.SetDeadline(time.Now().Add(connectTimeout)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(request); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("content type %q, want text/event-stream", resp.Header.Get("Content-Type"))
	}
	if !stop() {
		return nil, ctx.Err()
	}
	return resp, conn.SetDeadline(time.Time{})
}

// read parses the body until the stream ends: closed by the run through
// closeCtx, or dropped (server closed it, network error). connect has
// counted it in s.readers.
func (s *streamSet) read(st *stream, conn net.Conn, body io.Reader) {
	defer s.readers.Done()
	stop := context.AfterFunc(s.closeCtx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	buf := make([]byte, s.readBuffer)
	p := st.parser
	for {
		n, err := body.Read(buf)
		if n > 0 {
			p.RecordFrom = s.recordFrom.Load()
			p.Feed(buf[:n], time.Now().UnixNano())
			st.events.Store(p.Stats.Events)
		}
		if err != nil {
			if s.closeCtx.Err() == nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("server ended the stream")
				}
				st.dropErr = err
			}
			return
		}
	}
}

// wait waits for every reader to end; call it after cancelling closeCtx.
func (s *streamSet) wait() { s.readers.Wait() }

// eventsSoFar sums the events received by all streams until now.
func (s *streamSet) eventsSoFar() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum int64
	for _, st := range s.streams {
		sum += st.events.Load()
	}
	return sum
}
