package httpapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sse-service/sse-service/internal/stream"
)

// handleSubscribe serves GET /v1/events: it admits the client (topics,
// drain, limits), sends the headers and hands the connection to the hub
// until the stream ends.
func (s *server) handleSubscribe() echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		sub, err := parseSubscription(r, s.opts.MaxTopics)
		if err != nil {
			s.metrics.ConnectionAttempt(string(badRequest))
			return err
		}
		if s.hub.Draining() {
			s.metrics.ConnectionAttempt(rejectedDraining)
			return stream.ErrDraining
		}
		ip := clientIP(c)
		switch res := s.limiter.acquire(ip); res {
		case rejectedLimit:
			s.metrics.ConnectionAttempt(string(res))
			return &apiError{status: http.StatusServiceUnavailable, msg: "connection limit reached, try again later", retryAfter: retryAfter(s.opts.ReconnectJitter)}
		case rejectedIPLimit:
			s.metrics.ConnectionAttempt(string(res))
			return &apiError{status: http.StatusTooManyRequests, msg: "too many streams from this address, try again later", retryAfter: retryAfter(s.opts.ReconnectJitter)}
		}
		defer s.limiter.release(ip)
		s.metrics.ConnectionAttempt("accepted")

		s.capSendBuffer(r.Context())
		w := c.Response()
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)

		// Echo's Response.Flush swallows write errors (it only panics when
		// flushing is unsupported), so the stream writes to the writer
		// underneath, whose FlushError reports a missed deadline.
		raw := w.Writer
		reason := s.hub.Stream(r.Context(), responseConn{w: raw, rc: http.NewResponseController(raw)}, sub)
		s.log.Debug("stream closed", "reason", reason, "topics", len(sub.Topics))
		return nil
	}
}

const (
	badRequest       = "bad_request"
	rejectedDraining = "rejected_draining"
)

// parseSubscription reads the topics and the resume id of a subscribe
// request. Repeated topics count once.
func parseSubscription(r *http.Request, maxTopics int) (stream.Subscription, error) {
	q := r.URL.Query()
	topics := q["topic"]
	if len(topics) == 0 {
		return stream.Subscription{}, newError(http.StatusBadRequest, "missing topic: use ?topic=NAME (repeatable)")
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	if len(topics) > maxTopics {
		return stream.Subscription{}, newError(http.StatusBadRequest, fmt.Sprintf("too many topics: at most %d per stream", maxTopics))
	}
	for _, t := range topics {
		if err := stream.ValidateTopic(t); err != nil {
			return stream.Subscription{}, err
		}
	}
	sub := stream.Subscription{Topics: topics}
	// The header wins: a browser sends it on reconnect, while the query
	// parameter holds where the page first started. Empty means no resume,
	// as for a browser, which never sends an empty id.
	sub.LastEventID = r.Header.Get("Last-Event-ID")
	if sub.LastEventID == "" {
		sub.LastEventID = q.Get("lastEventId")
	}
	return sub, nil
}

// clientIP is the address limits count against: the peer, or the address
// in X-Forwarded-For when the peer is a trusted proxy (Echo's IPExtractor).
func clientIP(c echo.Context) netip.Addr {
	a, err := netip.ParseAddr(c.RealIP())
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

type connKey struct{}

// connContext keeps the accepted connection in its requests' contexts, so
// a stream can cap its socket's send buffer.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// capSendBuffer sets SO_SNDBUF on a stream's socket. Linux otherwise lets
// the buffer grow to megabytes, hiding a stalled client from the write
// deadline until it fills.
func (s *server) capSendBuffer(ctx context.Context) {
	if s.opts.SendBuffer <= 0 {
		return
	}
	tc, ok := ctx.Value(connKey{}).(*net.TCPConn)
	if !ok {
		return
	}
	if err := tc.SetWriteBuffer(s.opts.SendBuffer); err != nil {
		s.log.Debug("set stream send buffer", "err", err)
	}
}

// responseConn adapts an HTTP response to stream.Conn.
type responseConn struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (c responseConn) Write(p []byte) (int, error)        { return c.w.Write(p) }
func (c responseConn) Flush() error                       { return c.rc.Flush() }
func (c responseConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }
