package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/stream"
)

// handleSubscribe serves GET /v1/events: it admits the client (topics,
// drain, limits), sends the headers and hands the connection to the hub
// until the stream ends.
func (s *server) handleSubscribe() echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		// The stream's span is made here, not by otelhttp: it lasts for the
		// connection, which outlives this handler on HTTP/1.1 (see detach).
		_, span := s.tracer.Start(s.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)),
			"GET "+routeSubscribe, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				semconv.HTTPRequestMethodGet,
				semconv.HTTPRoute(routeSubscribe),
				semconv.URLPath(r.URL.Path),
				semconv.ClientAddress(c.RealIP()),
				semconv.UserAgentOriginal(r.UserAgent()),
			))
		sub, ip, err := s.admit(c)
		if err != nil {
			ae := toAPIError(err, s.opts.ReconnectJitter)
			if ae.reconnect != "" && acceptsEventStream(r) {
				span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusOK), attribute.String("sse.refused", ae.reconnect))
				span.End()
				return refuseAsStream(c, ae)
			}
			span.SetAttributes(semconv.HTTPResponseStatusCode(ae.status))
			if ae.status >= 500 {
				span.SetStatus(codes.Error, ae.msg)
			}
			span.End()
			return ae
		}
		// A stream from now on: SSE_MAX_CONNECTIONS bounds it, not the cap
		// on the other connections.
		s.gate.streaming(r.Context())
		span.SetAttributes(
			semconv.HTTPResponseStatusCode(http.StatusOK),
			attribute.StringSlice("sse.topics", sub.Topics),
			attribute.Bool("sse.resume", sub.LastEventID != ""),
		)

		s.capSendBuffer(r.Context())
		w := c.Response()
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")

		// Echo's Response.Flush swallows write errors (it only panics when
		// flushing is unsupported), so the stream uses the writer
		// underneath, whose FlushError reports a missed deadline.
		raw := w.Writer
		rc := http.NewResponseController(raw)
		eventStream := acceptsEventStream(r)
		if r.ProtoMajor == 1 && r.ProtoMinor >= 1 {
			if conn, _, err := rc.Hijack(); err == nil {
				s.detach(conn, sub, ip, responseHead(h), eventStream, span)
				return nil
			}
		}
		// Not hijackable (HTTP/2 or HTTP/1.0): stream in the handler. The
		// head goes with the first write, so a resume that fails before it
		// is answered as on the hijacked path.
		defer s.limiter.release(ip)
		conn := &responseConn{w: raw, rc: rc}
		res := s.hub.Stream(trace.ContextWithSpan(r.Context(), span), conn, sub)
		s.streamEnded(span, sub, res)
		switch s.streamEnd(res, conn.wrote, eventStream) {
		case endClose, endClean:
		case endError:
			// Nothing was sent: the stream's headers go, the error's come.
			for _, k := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
				h.Del(k)
			}
			return s.unavailable(res.Err)
		case endReconnect:
			_, _ = conn.Write(s.unavailableFrame(res.Err))
			_ = conn.Flush()
			panic(http.ErrAbortHandler)
		case endAbort:
			// net/http ends the response without its last chunk (HTTP/1.x)
			// or resets the stream (HTTP/2).
			panic(http.ErrAbortHandler)
		}
		return nil
	}
}

// How a stream's response ends.
type streamEndKind int

const (
	// endClose adds nothing: the client is gone, or was dropped.
	endClose streamEndKind = iota
	// endClean finishes the response properly after its last frame: the
	// client should not come back on its own (its token expired).
	endClean
	// endAbort ends it as a broken connection: every client library
	// reconnects after that, while a clean end stops some (r3labs/sse,
	// fetch-event-source; see PITFALLS). A drain ends so, after its
	// retry: and sse-reconnect event.
	endAbort
	// endError answers an error instead of the stream: nothing was written
	// yet (a resume the backend could not serve) and the client reads
	// status codes.
	endError
	// endReconnect answers such a failure to an event-stream client as a
	// refusal worth retrying: 200, retry:, one sse-reconnect event, and an
	// aborted end (an EventSource gives up for good on a 503).
	endReconnect
)

// streamEnd says how to end the response of a stream that ended with res,
// whatever the protocol: HTTP/1.1 (hijacked), HTTP/1.0 and HTTP/2 answer
// alike. wrote is whether anything of the stream was sent.
func (s *server) streamEnd(res stream.Result, wrote, eventStream bool) streamEndKind {
	switch {
	case res.Reason == stream.ClosedUnavailable && !wrote && eventStream:
		return endReconnect
	case res.Reason == stream.ClosedUnavailable && !wrote:
		return endError
	case res.Reason == stream.ClosedAuthExpired:
		return endClean
	case res.Reason.Final():
		return endAbort
	}
	return endClose
}

// unavailableFrame is what an event-stream client is sent instead of the
// 503 of unavailable (logged the same way): come back later.
func (s *server) unavailableFrame(cause error) []byte {
	ae := s.unavailable(cause)
	return stream.AppendReconnect(nil, ae.retryAfter, stream.ReconnectUnavailable)
}

// unavailable is the error a stream answers when its resume cannot be
// served now (the broker is unreachable), logged with the cause.
func (s *server) unavailable(cause error) *apiError {
	s.failures.Log(slog.LevelWarn, "request failed", "method", http.MethodGet, "path", routeSubscribe, "status", http.StatusServiceUnavailable,
		"err", cause)
	return &apiError{status: http.StatusServiceUnavailable, msg: "event backend unavailable, cannot resume now; retry later", retryAfter: retryAfter(s.opts.ReconnectJitter)}
}

// errDraining refuses a new stream while the hub drains: 503 with
// Retry-After, or, to a client that accepts text/event-stream, a stream
// that says sse-reconnect (reason draining) and ends.
var errDraining = errors.New("draining")

// admit checks a subscribe request (topics, token, drain, limits) and counts the
// attempt. An admitted client holds a limiter slot for ip until released.
func (s *server) admit(c echo.Context) (stream.Subscription, netip.Addr, error) {
	sub, err := parseSubscription(c.Request(), s.opts.MaxTopics)
	if err != nil {
		s.metrics.ConnectionAttempt(stream.ConnBadRequest)
		return sub, netip.Addr{}, err
	}
	expires, result, err := s.authorizeSubscribe(c.Request(), sub.Topics)
	if err != nil {
		s.metrics.ConnectionAttempt(result)
		return sub, netip.Addr{}, err
	}
	sub.Expires = expires
	if s.hub.Draining() {
		s.metrics.ConnectionAttempt(stream.ConnRejectedDraining)
		return sub, netip.Addr{}, errDraining
	}
	ip := limitKey(clientIP(c))
	switch res := s.limiter.acquire(ip); res {
	case stream.ConnRejectedLimit:
		s.metrics.ConnectionAttempt(res)
		return sub, ip, &apiError{status: http.StatusServiceUnavailable, msg: "connection limit reached, try again later", retryAfter: retryAfter(s.opts.ReconnectJitter), reconnect: stream.ReconnectLimit}
	case stream.ConnRejectedIPLimit:
		s.metrics.ConnectionAttempt(res)
		return sub, ip, &apiError{status: http.StatusTooManyRequests, msg: "too many streams from this address, try again later", retryAfter: retryAfter(s.opts.ReconnectJitter), reconnect: stream.ReconnectIPLimit}
	}
	s.metrics.ConnectionAttempt(stream.ConnAccepted)
	return sub, ip, nil
}

// refuseAsStream answers a refusal worth retrying (draining, a connection
// limit) to a client that asked for an event stream: an EventSource gives
// up for good on any status but 200, so it gets a 200 event stream that
// says when to come back (retry:, one sse-reconnect event) and ends. The
// attempt was already counted with its refusing result.
//
// The response then ends as a broken connection does (no last chunk on
// HTTP/1.1, a reset stream on HTTP/2): every client library reconnects
// after that, while a clean end stops some (see PITFALLS).
func refuseAsStream(c echo.Context, ae *apiError) error {
	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(stream.AppendReconnect(nil, ae.retryAfter, ae.reconnect))
	_ = http.NewResponseController(w.Writer).Flush()
	panic(http.ErrAbortHandler)
}

// acceptsEventStream reports whether the request lists text/event-stream
// in its Accept header, as every EventSource does (a bare */* does not
// count: such a client reads status codes).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// streamEnded records on the stream's span how many events it sent and
// why it ended, and ends it.
func (s *server) streamEnded(span trace.Span, sub stream.Subscription, res stream.Result) {
	span.SetAttributes(
		attribute.Int("sse.events_sent", res.Sent),
		attribute.Int("sse.events_replayed", res.Replayed),
		attribute.String("sse.close_reason", string(res.Reason)),
	)
	span.End()
	s.log.Debug("stream closed", "reason", res.Reason, "sent", res.Sent, "topics", len(sub.Topics))
}

// maxLastEventIDLen bounds a resume id (the service's are about 20 bytes).
const maxLastEventIDLen = 256

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
	if len(sub.LastEventID) > maxLastEventIDLen {
		// No id of this service is that long; an sse-gap would echo it.
		return stream.Subscription{}, newError(http.StatusBadRequest, fmt.Sprintf("Last-Event-ID too long: at most %d bytes", maxLastEventIDLen))
	}
	return sub, nil
}

// clientIP is the address limits count against: the peer, or the address
// in X-Forwarded-For when the peer is a trusted proxy (Echo's IPExtractor,
// see proxies.client).
func clientIP(c echo.Context) netip.Addr {
	a, err := netip.ParseAddr(c.RealIP())
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// connKey holds the accepted connection in its requests' contexts (see
// connGate.connContext), so a stream can cap its socket's send buffer.
type connKey struct{}

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
	w     http.ResponseWriter
	rc    *http.ResponseController
	wrote bool // the head (200) went with the first write
}

func (c *responseConn) Write(p []byte) (int, error) {
	c.wrote = true
	return c.w.Write(p)
}
func (c *responseConn) Flush() error                       { return c.rc.Flush() }
func (c *responseConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }
