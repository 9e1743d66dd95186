package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sse-service/sse-service/internal/ratelog"
	"github.com/sse-service/sse-service/internal/stream"
)

// apiError is an error with the status and message a client sees. Handlers
// return it (or errors the error handler knows how to map); nothing else
// decides a status code.
type apiError struct {
	status     int
	msg        string
	retryAfter time.Duration // sent as Retry-After when > 0
	header     [2]string     // one extra header, e.g. WWW-Authenticate
	// reconnect, for a refused stream worth retrying, is the reason an
	// event-stream client is told instead (see refuseAsStream).
	reconnect string
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, msg string) *apiError { return &apiError{status: status, msg: msg} }

// errorHandler writes every error as JSON {"error": "..."}: the one place
// where errors become status codes. Internal detail never reaches the client;
// every 5xx is logged with it (through failures, rate-limited).
func errorHandler(log *slog.Logger, failures *ratelog.Logger, jitter time.Duration, metrics Metrics) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		ae := toAPIError(err, jitter)
		if isPublish(c) {
			metrics.PublishFailed(publishFailure(ae.status))
		}
		switch {
		case ae.status >= 500 && ae.retryAfter == 0:
			failures.Log(slog.LevelError, "request failed", "method", c.Request().Method, "path", c.Path(), "status", ae.status, "err", err)
		case ae.status >= 500:
			// The backend's trouble (503, 504), or a drain: worth seeing,
			// not an error of the service itself.
			failures.Log(slog.LevelWarn, "request failed", "method", c.Request().Method, "path", c.Path(), "status", ae.status, "err", err)
		}
		errorHeader(c.Response().Header(), ae)
		c.Response().Header().Set("Content-Type", echo.MIMEApplicationJSON)
		if c.Request().Method == http.MethodHead {
			err = c.NoContent(ae.status)
		} else {
			err = c.Blob(ae.status, echo.MIMEApplicationJSON, errorBody(ae))
		}
		if err != nil {
			log.Debug("write error response", "err", err)
		}
	}
}

// errorHeader sets the headers of an error answer.
func errorHeader(h http.Header, ae *apiError) {
	if ae.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(ae.retryAfter.Seconds())))
	}
	if ae.header[0] != "" {
		h.Set(ae.header[0], ae.header[1])
	}
	h.Set("Cache-Control", "no-store")
}

// errorBody is the JSON body of an error answer: {"error": "..."}.
func errorBody(ae *apiError) []byte {
	b, _ := json.Marshal(map[string]string{"error": ae.msg}) // cannot fail: strings
	return append(b, '\n')
}

// writeError writes a complete error answer, as errorHandler does, on a
// connection taken over from net/http (a stream that failed before its
// first byte), and tells the client the connection closes.
func writeError(w io.Writer, ae *apiError) error {
	body := errorBody(ae)
	h := http.Header{}
	errorHeader(h, ae)
	h.Set("Content-Type", echo.MIMEApplicationJSON)
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	res := &http.Response{
		StatusCode: ae.status, ProtoMajor: 1, ProtoMinor: 1, Header: h,
		ContentLength: int64(len(body)), Body: io.NopCloser(bytes.NewReader(body)), Close: true,
	}
	return res.Write(w)
}

func toAPIError(err error, jitter time.Duration) *apiError {
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		out := *ae
		out.msg = err.Error() // keeps context such as "event 3: "
		return &out
	case errors.Is(err, stream.ErrInvalid):
		return newError(http.StatusBadRequest, err.Error())
	case errors.Is(err, errDraining):
		return &apiError{status: http.StatusServiceUnavailable, msg: "server is shutting down, reconnect to another instance", retryAfter: retryAfter(jitter), reconnect: stream.ReconnectDraining}
	case errors.Is(err, stream.ErrOutcomeUnknown):
		// Sent, never answered: saying "nothing was stored" could be a
		// lie, and so could "stored".
		return &apiError{status: http.StatusGatewayTimeout, msg: "event backend did not answer in time: the event may or may not be stored; repeat the request with the same Idempotency-Key (one is needed to retry safely)", retryAfter: retryAfter(jitter)}
	case errors.Is(err, stream.ErrUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, msg: "event backend unavailable, nothing was stored; retry later", retryAfter: retryAfter(jitter)}
	case errors.As(err, &he):
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok {
			msg = m
		}
		return newError(he.Code, msg)
	}
	return newError(http.StatusInternalServerError, "internal error")
}

// publishFailure is the sse_publish_failures_total reason for a status.
func publishFailure(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return "invalid"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return "timeout"
	}
	return "error"
}

// retryAfter is a random whole number of seconds from 1 to 1 plus the
// whole seconds of jitter, so refused clients do not all come back at the
// same moment.
func retryAfter(jitter time.Duration) time.Duration {
	return time.Duration(1+rand.N(int64(jitter/time.Second)+1)) * time.Second
}
