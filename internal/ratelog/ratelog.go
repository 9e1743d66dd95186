// Package ratelog logs through slog at a bounded rate: during an outage the
// same failure can happen thousands of times a second, and each one should
// still be seen (with its cause) without the log drowning everything else.
package ratelog

import (
	"context"
	"log/slog"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Logger writes at most a burst of records and then perSecond records a
// second; a record that is written says how many were held back since the
// previous one ("suppressed"). Safe for concurrent use. Create it with New.
type Logger struct {
	log        *slog.Logger
	limit      *rate.Limiter
	suppressed atomic.Int64
}

// New returns a Logger over log.
func New(log *slog.Logger, perSecond float64, burst int) *Logger {
	return &Logger{log: log, limit: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// Log writes the record if the rate allows, else counts it.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	if !l.limit.Allow() {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
