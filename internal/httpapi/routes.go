package httpapi

import (
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"
)

// Route patterns, as metrics and spans name them.
const (
	routeSubscribe = "/v1/events"
	routeBatch     = "/v1/events"
	routePublish   = "/v1/topics/:topic/events"
)

// routes lists every route of the public listener.
func (s *server) routes(e *echo.Echo) {
	e.GET(routeSubscribe, s.handleSubscribe())
	e.POST(routeBatch, s.handleBatch())
	e.POST(routePublish, s.handlePublish())
	e.GET("/openapi.yaml", s.handleOpenAPI())
	e.GET("/*", s.handleStatic())
}

// methodNotAllowed answers 405 with Allow, as Echo's router does for the
// methods a path has no route for.
func methodNotAllowed(allowed ...string) echo.HandlerFunc {
	allow := strings.Join(append([]string{http.MethodOptions}, allowed...), ", ")
	return func(c echo.Context) error {
		c.Response().Header().Set("Allow", allow)
		return newError(http.StatusMethodNotAllowed, "method "+c.Request().Method+" not allowed: use "+strings.Join(allowed, " or "))
	}
}

// isPublishPath reports whether p is /v1/topics/{topic}/events.
func isPublishPath(p string) bool {
	topic, ok := strings.CutPrefix(p, "/v1/topics/")
	if !ok {
		return false
	}
	topic, ok = strings.CutSuffix(topic, "/events")
	return ok && topic != "" && !strings.Contains(topic, "/")
}

// isStream tells the stream route apart: it has its own span and its
// duration is sse_connection_duration_seconds, not a request metric.
func isStream(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Path == routeSubscribe
}

// isPublish tells the publish routes apart, for sse_publish_failures_total.
func isPublish(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && (c.Path() == routePublish || c.Path() == routeBatch)
}

func (s *server) handleOpenAPI() echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", s.opts.OpenAPI)
	}
}

// handleStatic serves the demo page's files, with a strict content security
// policy: the page loads nothing from elsewhere.
func (s *server) handleStatic() echo.HandlerFunc {
	files := http.FileServerFS(s.opts.Static)
	publishOnly := methodNotAllowed(http.MethodPost)
	return func(c echo.Context) error {
		if isPublishPath(c.Request().URL.EscapedPath()) {
			// The path exists, for POST only: a GET lands here (the
			// catch-all is GET) and gets what any other method gets.
			return publishOnly(c)
		}
		name := strings.TrimPrefix(path.Clean("/"+c.Param("*")), "/")
		if name == "" {
			name = "index.html"
		}
		if st, err := fs.Stat(s.opts.Static, name); err != nil || st.IsDir() {
			return echo.ErrNotFound
		}
		h := c.Response().Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	}
}
