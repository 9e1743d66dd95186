// Package httpapi is the public HTTP API: the event stream, the publish
// endpoints, the demo page and the OpenAPI document, served by Echo.
package httpapi

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/ratelog"
	"github.com/sse-service/sse-service/internal/stream"
)

// Metrics counts connection attempts by result (the sse_connections_total
// labels). Implementations must be safe for concurrent use.
type Metrics interface {
	ConnectionAttempt(result stream.ConnResult)
	// Request observes a finished request on a route other than the
	// stream (route is the pattern, "" when none matched).
	Request(route, method string, code int, took time.Duration)
	// PublishFailed counts a refused publish by reason: invalid,
	// unauthorized, forbidden, too_large, unavailable, timeout or error.
	PublishFailed(reason string)
}

// DefaultIdleTimeout is what a zero Options.IdleTimeout means (and the
// service's SSE_IDLE_TIMEOUT default): above the 60 s idle timeout of nginx
// and most load balancers, so they close first.
const DefaultIdleTimeout = 75 * time.Second

// Options configure the API. Zero limits mean no limit, except where noted.
type Options struct {
	PublishTokens  []string // at least one; publishing is never open
	MaxEventBytes  int      // body limit of a single publish
	MaxBatchEvents int
	MaxBatchBytes  int
	// BodyTimeout bounds reading the body of any request but a stream (the
	// server has no ReadTimeout: it would end streams); a body not in by
	// then gets 408 and its connection closes. Zero means 10 s.
	BodyTimeout     time.Duration
	MaxTopics       int // per stream; must be > 0
	MaxConnections  int
	MaxConnsPerIP   int
	TrustedProxies  []netip.Prefix
	SendBuffer      int // SO_SNDBUF of stream sockets; 0 leaves it alone
	ReconnectJitter time.Duration
	// MaxNonStreamConns caps the connections that are not event streams:
	// waiting for a request (or its body), serving one, or idle between
	// requests. At the cap a new connection takes the place of the
	// longest-idle one, else of the one waiting longest for its request
	// (at least WaitGrace), else it is closed as soon as accepted.
	MaxNonStreamConns int
	// MaxNonStreamConnsPerIP caps them per peer address (IPv6: per /64)
	// outside TrustedProxies, while MaxNonStreamConns is at least half
	// used (or zero): over it, a new connection replaces the address's own
	// idle or waiting ones, or is closed.
	MaxNonStreamConnsPerIP int
	// WaitGrace is how long a connection may wait for its request before a
	// newcomer may take its place. Zero means 1 s.
	WaitGrace time.Duration
	// IdleTimeout closes keep-alive connections without a request for that
	// long. Zero means 75 s.
	IdleTimeout time.Duration
	// ConnMetrics observes the connections that are not streams; nil: none.
	ConnMetrics ConnMetrics
	// Static is the demo page's files (index.html at the root).
	Static fs.FS
	// OpenAPI is the API description served at /openapi.yaml.
	OpenAPI []byte
	// Verifier checks JWTs: of subscribers to private topics, and of
	// publishers besides PublishTokens. Nil: no JWTs, and then
	// PrivateTopics must be empty.
	Verifier *auth.Verifier
	// PrivateTopics are the topics that need a token to subscribe; the
	// clock topic only when listed by name.
	PrivateTopics auth.Patterns
	// JWTLeeway is added to a token's expiry before its stream ends.
	JWTLeeway time.Duration
	// AuthCookie names the cookie that may carry a subscriber's token.
	AuthCookie string
	// CORSOrigins may use the API from browsers on other origins
	// (credentials allowed), or "*" for any origin without credentials.
	// Empty: same origin only.
	CORSOrigins []string
	// TracerProvider and Propagator trace requests; nil means none.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

type server struct {
	hub     *stream.Hub
	metrics Metrics
	log     *slog.Logger
	opts    Options
	limiter *connLimiter
	gate    *connGate
	tokens  *tokenSet
	// clockPrivate: the clock topic is listed by name in PrivateTopics
	// (a pattern alone never makes it private).
	clockPrivate bool

	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// failures logs 5xx answers with their cause, rate-limited: in an
	// outage every publish fails, and each failure still shows.
	failures *ratelog.Logger

	streams sync.WaitGroup // detached streams (see detach)
	connsMu sync.Mutex     // guards conns
	conns   map[*chunkConn]struct{}
}

// Server is the public HTTP server. Streams on HTTP/1.1 run detached from
// their handlers (see detach), so Shutdown and Close also wait for and end
// those; a stream itself ends when the hub drains.
type Server struct {
	http   *http.Server
	api    *server
	routes *echo.Echo
}

// Serve accepts connections on ln until Shutdown or Close. Connections over
// the caps on those that are not streams (Options.MaxNonStreamConns) are
// closed as soon as accepted.
func (srv *Server) Serve(ln net.Listener) error {
	return srv.http.Serve(gateListener{Listener: ln, gate: srv.api.gate})
}

// Shutdown stops accepting connections, waits for requests in flight, then
// waits for detached streams to end (call Hub.Drain first), until ctx ends.
func (srv *Server) Shutdown(ctx context.Context) error {
	if err := srv.http.Shutdown(ctx); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		srv.api.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for streams: %w", ctx.Err())
	}
}

// Close closes every connection at once, detached streams included.
func (srv *Server) Close() error {
	err := srv.http.Close()
	srv.api.connsMu.Lock()
	for cc := range srv.api.conns {
		_ = cc.Close()
	}
	srv.api.connsMu.Unlock()
	return err
}

// NewServer returns the public HTTP server, ready to Serve on a listener.
// It has a ReadHeaderTimeout but no ReadTimeout or WriteTimeout: those are
// absolute deadlines that would end every stream (a read deadline cancels
// the request context). Streams set a deadline per write instead, and
// publish handlers one for reading their body. Streams end when the hub
// drains.
func NewServer(hub *stream.Hub, metrics Metrics, log *slog.Logger, opts Options) *Server {
	s := &server{
		hub:     hub,
		metrics: metrics,
		log:     log,
		opts:    opts,
		limiter: newConnLimiter(opts.MaxConnections, opts.MaxConnsPerIP),
		tokens:  newTokenSet(opts.PublishTokens),
		clockPrivate: slices.ContainsFunc(opts.PrivateTopics, func(p auth.Pattern) bool {
			return p.String() == stream.ClockTopic
		}),
		conns:    make(map[*chunkConn]struct{}),
		failures: ratelog.New(log, 5, 20),
	}
	s.gate = newConnGate(gateOptions{
		max:      opts.MaxNonStreamConns,
		maxPerIP: opts.MaxNonStreamConnsPerIP,
		grace:    opts.WaitGrace,
		trusted:  proxies(opts.TrustedProxies),
		metrics:  opts.ConnMetrics,
	})
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	if opts.Propagator == nil {
		opts.Propagator = propagation.TraceContext{}
	}
	s.opts = opts
	s.tracer = opts.TracerProvider.Tracer(instrumentation)
	s.propagator = opts.Propagator
	if len(opts.PrivateTopics) > 0 && opts.Verifier == nil {
		panic("httpapi: PrivateTopics without a Verifier")
	}
	e.HTTPErrorHandler = errorHandler(log, s.failures, opts.ReconnectJitter, metrics)
	// Before routing, tracing and logs see the URL: take the query token out.
	e.Pre(stripQueryToken)
	e.IPExtractor = ipExtractor(opts.TrustedProxies)
	// No Timeout, ContextTimeout, BodyDump or Gzip middleware: they all
	// break or buffer an endless text/event-stream response. otelhttp keeps
	// Flush working, but the stream route has its own span anyway.
	e.Use(
		middleware.Recover(),
		echo.WrapMiddleware(otelhttp.NewMiddleware("sse-service",
			otelhttp.WithTracerProvider(opts.TracerProvider),
			otelhttp.WithPropagators(opts.Propagator),
			otelhttp.WithFilter(func(r *http.Request) bool { return !isStream(r) }),
		)),
		observeRequests(metrics),
		s.bodyDeadline,
	)
	if len(opts.CORSOrigins) > 0 {
		e.Use(cors(opts.CORSOrigins))
	}
	s.routes(e)
	return &Server{api: s, routes: e, http: &http.Server{
		Handler:           s.gate.handler(e),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		ConnContext:       s.gate.connContext,
		ConnState:         s.gate.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
}

// instrumentation names the tracer of this package.
const instrumentation = "github.com/sse-service/sse-service/internal/httpapi"

// observeRequests names the request's span after its route and counts it
// in the request metrics. The stream route is left alone (see isStream).
func observeRequests(m Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if isStream(r) {
				return next(c)
			}
			start := time.Now()
			span := trace.SpanFromContext(r.Context())
			span.SetName(r.Method + " " + c.Path())
			span.SetAttributes(semconv.HTTPRoute(c.Path()))
			err := next(c)
			if err != nil {
				c.Error(err) // write the answer now, so its status is known
			}
			m.Request(c.Path(), r.Method, c.Response().Status, time.Since(start))
			return nil
		}
	}
}

// ipExtractor believes X-Forwarded-For only from the trusted proxies, and
// nothing from anyone by default (Echo's own extractors trust private
// ranges unless told not to). See proxies.client.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	p := proxies(trusted)
	return func(r *http.Request) string {
		if a := p.client(r); a.IsValid() {
			return a.String()
		}
		return ""
	}
}
