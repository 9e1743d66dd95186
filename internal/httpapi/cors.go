package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// cors lets pages on the given origins use the stream and the publish API
// (preflight included). With credentials, so EventSource(url,
// {withCredentials: true}) sends the token cookie, unless "*" is listed:
// any origin then, but never with credentials (browsers refuse the pair,
// and reflecting every origin with credentials would hand any site the
// user's cookie-authenticated streams).
func cors(origins []string) echo.MiddlewareFunc {
	wildcard := slices.Contains(origins, "*")
	return middleware.CORSWithConfig(middleware.CORSConfig{
		Skipper: func(c echo.Context) bool {
			return !strings.HasPrefix(c.Request().URL.Path, "/v1/")
		},
		AllowOrigins:     origins,
		AllowCredentials: !wildcard,
		AllowMethods:     []string{http.MethodGet, http.MethodPost},
		AllowHeaders:     []string{"Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key"},
		ExposeHeaders:    []string{"Retry-After", "WWW-Authenticate"},
		MaxAge:           600, // seconds a browser may cache a preflight answer
	})
}
