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
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sse-service/sse-service/internal/stream"
)

// Metrics counts connection attempts by result (the sse_connections_total
// labels). Implementations must be safe for concurrent use.
type Metrics interface {
	ConnectionAttempt(result string)
}

// Options configure the API. Zero limits mean no limit, except where noted.
type Options struct {
	PublishTokens   []string // at least one; publishing is never open
	MaxEventBytes   int      // body limit of a single publish
	MaxBatchEvents  int
	MaxBatchBytes   int
	MaxTopics       int // per stream; must be > 0
	MaxConnections  int
	MaxConnsPerIP   int
	TrustedProxies  []netip.Prefix
	SendBuffer      int // SO_SNDBUF of stream sockets; 0 leaves it alone
	ReconnectJitter time.Duration
	// Static is the demo page's files (index.html at the root).
	Static fs.FS
	// OpenAPI is the API description served at /openapi.yaml.
	OpenAPI []byte
}

type server struct {
	hub     *stream.Hub
	metrics Metrics
	log     *slog.Logger
	opts    Options
	limiter *connLimiter
	tokens  *tokenSet

	streams sync.WaitGroup // detached streams (see detach)
	connsMu sync.Mutex     // guards conns
	conns   map[net.Conn]struct{}
}

// Server is the public HTTP server. Streams on HTTP/1.1 run detached from
// their handlers (see detach), so Shutdown and Close also wait for and end
// those; a stream itself ends when the hub drains.
type Server struct {
	http *http.Server
	api  *server
}

// Handler is the server's HTTP handler (Echo).
func (srv *Server) Handler() http.Handler { return srv.http.Handler }

// Serve accepts connections on ln until Shutdown or Close.
func (srv *Server) Serve(ln net.Listener) error { return srv.http.Serve(ln) }

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
	for c := range srv.api.conns {
		c.Close()
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
		conns:   make(map[net.Conn]struct{}),
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(log, opts.ReconnectJitter)
	e.IPExtractor = ipExtractor(opts.TrustedProxies)
	// Recover only: no Timeout, ContextTimeout, BodyDump or Gzip, which all
	// break or buffer an endless text/event-stream response.
	e.Use(middleware.Recover())
	s.routes(e)
	return &Server{api: s, http: &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
}

// ipExtractor believes X-Forwarded-For only from the trusted proxies, and
// nothing from anyone by default (Echo otherwise trusts private ranges).
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
