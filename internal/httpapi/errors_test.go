package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sse-service/sse-service/internal/stream"
)

func TestToAPIError(t *testing.T) {
	const jitter = 3 * time.Second
	tests := []struct {
		name      string
		err       error
		status    int
		msg       string // exact message
		retry     bool   // a Retry-After is wanted
		header    [2]string
		notInBody string // detail that must not reach the client
	}{
		{
			name:   "invalid",
			err:    fmt.Errorf("%w topic: empty", stream.ErrInvalid),
			status: http.StatusBadRequest, msg: "invalid topic: empty",
		},
		{
			name:   "draining",
			err:    errDraining,
			status: http.StatusServiceUnavailable, msg: "server is shutting down, reconnect to another instance", retry: true,
		},
		{
			name:   "unavailable",
			err:    fmt.Errorf("publish to nats://user:pw@10.0.0.5:4222: %w", stream.ErrUnavailable),
			status: http.StatusServiceUnavailable, msg: "event backend unavailable, nothing was stored; retry later", retry: true,
			notInBody: "10.0.0.5",
		},
		{
			name:   "outcome unknown",
			err:    fmt.Errorf("publish to SSE: %w: no answer: nats: timeout from 10.0.0.5", stream.ErrOutcomeUnknown),
			status: http.StatusGatewayTimeout, msg: "event backend did not answer in time: the event may or may not be stored; repeat the request with the same Idempotency-Key (one is needed to retry safely)", retry: true,
			notInBody: "10.0.0.5",
		},
		{
			name:   "echo not found",
			err:    echo.ErrNotFound,
			status: http.StatusNotFound, msg: "Not Found",
		},
		{
			name:   "echo error with a message",
			err:    echo.NewHTTPError(http.StatusRequestEntityTooLarge, "too big"),
			status: http.StatusRequestEntityTooLarge, msg: "too big",
		},
		{
			name:   "echo error with an error as message",
			err:    echo.NewHTTPError(http.StatusBadRequest, errors.New("parse /secret/path: bad")),
			status: http.StatusBadRequest, msg: "Bad Request", notInBody: "/secret/path",
		},
		{
			name:   "unknown",
			err:    errors.New("open /var/lib/secret: permission denied"),
			status: http.StatusInternalServerError, msg: "internal error", notInBody: "/var/lib/secret",
		},
		{
			name:   "wrapped unknown",
			err:    fmt.Errorf("replay: %w", errors.New("dial tcp 10.0.0.5:4222")),
			status: http.StatusInternalServerError, msg: "internal error", notInBody: "10.0.0.5",
		},
		{
			name:   "api error",
			err:    newError(http.StatusUnsupportedMediaType, "Content-Type must be application/json"),
			status: http.StatusUnsupportedMediaType, msg: "Content-Type must be application/json",
		},
		{
			name:   "wrapped api error keeps its status and gets the context",
			err:    fmt.Errorf("event 3: %w", newError(http.StatusBadRequest, "invalid data")),
			status: http.StatusBadRequest, msg: "event 3: invalid data",
		},
		{
			name:   "wrapped api error keeps its extra header",
			err:    fmt.Errorf("publish: %w", errUnauthorized),
			status: http.StatusUnauthorized, msg: "publish: missing or invalid bearer token",
			header: [2]string{"WWW-Authenticate", `Bearer realm="sse-service"`},
		},
		{
			name:   "api error keeps its Retry-After",
			err:    &apiError{status: http.StatusTooManyRequests, msg: "slow down", retryAfter: 2 * time.Second},
			status: http.StatusTooManyRequests, msg: "slow down", retry: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ae := toAPIError(tt.err, jitter)
			if got := ae.status; got != tt.status {
				t.Fatalf("status = %d, want %d", got, tt.status)
			}
			if got := ae.msg; got != tt.msg {
				t.Fatalf("message = %q, want %q", got, tt.msg)
			}
			if got := ae.header; got != tt.header {
				t.Fatalf("extra header = %q, want %q", got, tt.header)
			}
			if tt.notInBody != "" && strings.Contains(ae.msg, tt.notInBody) {
				t.Fatalf("message %q leaks %q", ae.msg, tt.notInBody)
			}
			if !tt.retry {
				if ae.retryAfter != 0 {
					t.Fatalf("Retry-After %s, want none", ae.retryAfter)
				}
				return
			}
			if ae.retryAfter < time.Second || ae.retryAfter > time.Second+jitter {
				t.Fatalf("Retry-After %s, want within [1s, %s]", ae.retryAfter, time.Second+jitter)
			}
		})
	}
}

func TestToAPIErrorLeavesSharedErrorsAlone(t *testing.T) {
	before := *errUnauthorized
	toAPIError(fmt.Errorf("context: %w", errUnauthorized), 0)
	if *errUnauthorized != before {
		t.Fatalf("errUnauthorized changed to %+v, want %+v", *errUnauthorized, before)
	}
}

func TestRetryAfterIsAWholeNumberOfSecondsFromOneToOnePlusJitter(t *testing.T) {
	for _, jitter := range []time.Duration{0, 500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 5 * time.Second, 30 * time.Second} {
		t.Run(jitter.String(), func(t *testing.T) {
			lo, hi := time.Second, time.Second+jitter
			seen := map[time.Duration]bool{}
			for range 5000 {
				d := retryAfter(jitter)
				if d < lo || d > hi {
					t.Fatalf("retryAfter(%s) = %s, want within [%s, %s]", jitter, d, lo, hi)
				}
				if d%time.Second != 0 {
					t.Fatalf("retryAfter(%s) = %s, want whole seconds", jitter, d)
				}
				seen[d] = true
			}
			// Spread: every whole second in the range comes up.
			if got, want := len(seen), int(jitter/time.Second)+1; got != want {
				t.Fatalf("retryAfter(%s) gave %d distinct values, want %d", jitter, got, want)
			}
		})
	}
}
