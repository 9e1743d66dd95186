package bench

import (
	"bufio"
	"context"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// connectTimeout bounds dialing a stream and reading its response header.
const connectTimeout = 10 * time.Second

// stream is one SSE subscription once its response header has been read.
// From then on it belongs to one poller, which reads and parses it.
type stream struct {
	fd     int // our own descriptor of the socket; -1 once closed
	body   chunkDecoder
	parser *Parser
	// dropErr is why the stream ended before the run closed it.
	dropErr error
}

// streamSet opens all streams of a run and hands them to the pollers.
type streamSet struct {
	targets []Target
	sources []net.IP
	topics  []string // stream i subscribes to topics[i mod len]
	token   string   // subscriber's bearer token, for private topics
	pollers *pollerGroup

	mu        sync.Mutex
	connected int
	perTopic  map[int]int // streams connected, by topic index
	failed    int
	firstFail error
}

// open dials n streams with at most dials connects in flight and returns
// when every attempt has succeeded or failed (or ctx is done). Connected
// streams are read by the pollers until they are closed.
func (s *streamSet) open(ctx context.Context, n, dials int) {
	s.perTopic = map[int]int{}
	// requests[i] is stream i's: its target and its topic.
	requests := make([][]byte, len(s.targets)*len(s.topics))
	for i := range requests {
		requests[i] = subscribeRequest(s.targets[i%len(s.targets)], s.topics[i%len(s.topics)], s.token)
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
		pending.Go(func() {
			defer func() { <-sem }()
			if err := s.connect(ctx, i, requests); err != nil {
				s.fail(1, err)
				return
			}
			s.mu.Lock()
			s.connected++
			s.perTopic[i%len(s.topics)]++
			s.mu.Unlock()
		})
	}
	pending.Wait()
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

// connect opens the i-th stream and hands it to a poller.
//
// Dialing and the HTTP exchange use net and net/http. Then the socket is
// duplicated and the net.Conn closed, so that from then on the socket is
// only in a poller's epoll set: one read per readiness, no goroutine per
// stream, no read that only returns EAGAIN (see poller_linux.go).
func (s *streamSet) connect(ctx context.Context, i int, requests [][]byte) error {
	t := s.targets[i%len(s.targets)]
	d := net.Dialer{LocalAddr: s.source(i, t), Timeout: connectTimeout}
	conn, err := d.DialContext(ctx, "tcp", t.Addr.String())
	if err != nil {
		return err // names both addresses already
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := subscribe(ctx, conn, br, requests[i%len(requests)])
	if err != nil {
		return fmt.Errorf("subscribe on %s from %s: %w", t.Base, conn.LocalAddr(), err)
	}
	// The body bytes read along with the header (at least the preamble).
	early, _ := br.Peek(br.Buffered())
	fd, err := dupSocket(conn.(*net.TCPConn))
	if err != nil {
		return fmt.Errorf("stream from %s: %w", conn.LocalAddr(), err)
	}
	st := &stream{
		fd:   fd,
		body: chunkDecoder{chunked: len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"},
	}
	if err := s.pollers.add(st, early); err != nil {
		closeFD(fd)
		return fmt.Errorf("stream from %s: %w", conn.LocalAddr(), err)
	}
	return nil
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
// topic on t, with the bearer token when there is one. It is the same for
// every stream to t.
func subscribeRequest(t Target, topic, token string) []byte {
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	return fmt.Appendf(nil, "GET %s/v1/events?topic=%s HTTP/1.1\r\n"+
		"Host: %s\r\n"+
		"Accept: text/event-stream\r\n"+
		"Cache-Control: no-cache\r\n"+
		"%s"+
		"User-Agent: sse-bench\r\n\r\n",
		t.Path, url.QueryEscape(topic), t.Host, auth)
}

// subscribe sends request on conn and checks that the response, read
// through br, is an event stream.
func subscribe(ctx context.Context, conn net.Conn, br *bufio.Reader, request []byte) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := conn.SetDeadline(time.Now().Add(connectTimeout)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(request); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	// The body is never read through resp; the caller takes the socket.
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return nil, fmt.Errorf("content type %q, want text/event-stream", resp.Header.Get("Content-Type"))
	}
	if !stop() {
		return nil, ctx.Err()
	}
	return resp, nil
}
