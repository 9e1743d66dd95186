package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// problem is one bad setting.
type problem struct {
	name string // the full variable name, e.g. SSE_ADDR
	msg  string
}

func (p problem) Error() string { return p.name + ": " + p.msg }

// Validate returns every problem at once, each naming its variable and
// what it accepts.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// resolved parses and reads what c's variables name, and checks every
// setting: the one place each is validated.
func (c Config) resolved() (Resolved, []problem) {
	var r Resolved
	var errs []problem
	bad := func(name, format string, args ...any) {
		errs = append(errs, problem{Prefix + "_" + name, fmt.Sprintf(format, args...)})
	}
	if c.Addr == "" {
		bad("ADDR", "must not be empty (e.g. :8080)")
	}
	if c.AdminAddr == "" {
		bad("ADMIN_ADDR", "must not be empty (e.g. :9090)")
	}
	if c.Addr != "" && c.Addr == c.AdminAddr && !strings.HasSuffix(c.Addr, ":0") {
		bad("ADMIN_ADDR", "must differ from SSE_ADDR (%q): the admin port must not be public", c.Addr)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("LOG_FORMAT", "%q is not one of: text, json", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not one of: debug, info, warn, error", c.LogLevel)
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad(name, "must be a positive duration such as 15s or 1m (got %s)", d)
		}
	}
	positive("HEARTBEAT_INTERVAL", c.HeartbeatInterval)
	positive("RETRY", c.Retry)
	positive("HISTORY_TTL", c.HistoryTTL)
	positive("IDEMPOTENCY_WINDOW", c.IdempotencyWindow)
	positive("WRITE_TIMEOUT", c.WriteTimeout)
	positive("RECONNECT_JITTER", c.ReconnectJitter)
	positive("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	if c.WriteDelay < 0 || c.WriteDelay > time.Second {
		bad("WRITE_DELAY", "must be a duration from 0 (off) to 1s, such as 20ms (got %s)", c.WriteDelay)
	}
	if c.ClockInterval < 0 {
		bad("CLOCK_INTERVAL", "must be 0 (off) or a positive duration such as 1s (got %s)", c.ClockInterval)
	}
	between := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			bad(name, "must be an integer from %d to %d (got %d)", lo, hi, v)
		}
	}
	between("HISTORY_SIZE", c.HistorySize, 1, 1_000_000)
	between("IDEMPOTENCY_MAX_KEYS", c.IdempotencyMaxKeys, 1000, 100_000_000)
	if c.HistoryMaxBytes < 1<<20 || c.HistoryMaxBytes > 1<<40 {
		bad("HISTORY_MAX_BYTES", "must be an integer from 1048576 (1 MiB) to 1099511627776 (1 TiB) bytes (got %d)", c.HistoryMaxBytes)
	}
	between("CLIENT_BUFFER", c.ClientBuffer, 1, 1_000_000)
	between("REPLAY_MAX_BYTES", c.ReplayMaxBytes, 64<<10, 1<<30)
	between("REPLAY_RATE", c.ReplayRate, 0, 1<<40)
	if c.ReplayRate > 0 && c.ReplayRate < 64<<10 {
		bad("REPLAY_RATE", "must be 0 (no limit) or at least 65536 bytes per second (got %d)", c.ReplayRate)
	}
	between("SEND_BUFFER", c.SendBuffer, 0, 64<<20)
	between("MAX_CONNECTIONS", c.MaxConnections, 0, 10_000_000)
	between("MAX_CONNECTIONS_PER_IP", c.MaxConnsPerIP, 0, 10_000_000)
	between("MAX_NON_STREAM_CONNECTIONS", c.MaxNonStreamConns, 0, 10_000_000)
	if c.MaxNonStreamConns > 0 && c.MaxNonStreamConns < 16 {
		bad("MAX_NON_STREAM_CONNECTIONS", "must be 0 (no limit) or at least 16 (got %d)", c.MaxNonStreamConns)
	}
	between("MAX_NON_STREAM_CONNECTIONS_PER_IP", c.MaxNonStreamConnsPerIP, 0, 10_000_000)
	if c.IdleTimeout < time.Second || c.IdleTimeout > time.Hour {
		bad("IDLE_TIMEOUT", "must be a duration from 1s to 1h, such as 75s (got %s)", c.IdleTimeout)
	}
	between("MAX_TOPICS_PER_STREAM", c.MaxTopics, 1, 1000)
	between("MAX_EVENT_BYTES", c.MaxEventBytes, 64, 16<<20)
	between("MAX_BATCH_EVENTS", c.MaxBatchEvents, 1, 100_000)
	between("MAX_BATCH_BYTES", c.MaxBatchBytes, 64, 256<<20)
	if c.SendBuffer > 0 && c.SendBuffer < 4096 {
		bad("SEND_BUFFER", "must be 0 (kernel autotuning) or at least 4096 bytes (got %d)", c.SendBuffer)
	}
	var err error
	if r.TrustedProxies, err = parsePrefixes(c.TrustedProxies); err != nil {
		bad("TRUSTED_PROXIES", "%v (want comma-separated CIDRs such as 10.0.0.0/8,fd00::/8)", err)
	}
	for _, t := range c.PublishTokens {
		if t = strings.TrimSpace(t); t == "" {
			continue // "a,b," has an empty last entry
		}
		if err := checkToken(t); err != nil {
			bad("PUBLISH_TOKENS", "%v", err)
			break
		}
		r.PublishTokens = append(r.PublishTokens, t)
	}
	if c.PublishTokensFile != "" {
		ts, err := readTokensFile(c.PublishTokensFile)
		if err != nil {
			bad("PUBLISH_TOKENS_FILE", "%v", err)
		}
		r.PublishTokens = append(r.PublishTokens, ts...)
	}
	errs = append(errs, c.resolveAuth(&r)...)
	switch c.Broker {
	case "memory":
	case "nats":
		if strings.TrimSpace(c.NATSURL) == "" {
			bad("NATS_URL", "required with SSE_BROKER=nats (e.g. nats://nats:4222, several comma separated)")
		}
		for _, u := range strings.Split(c.NATSURL, ",") {
			if u = strings.TrimSpace(u); u != "" && !strings.Contains(u, "://") {
				bad("NATS_URL", "%q is not a URL such as nats://host:4222 or tls://host:4222", u)
			}
		}
		if c.NATSStream == "" || strings.ContainsAny(c.NATSStream, " \t.*>/\\") {
			bad("NATS_STREAM", "%q is not a stream name (no spaces, '.', '*', '>', '/' or '\\')", c.NATSStream)
		}
		for _, tok := range strings.Split(c.NATSSubjectPrefix, ".") {
			if tok == "" || strings.ContainsAny(tok, " \t*>") {
				bad("NATS_SUBJECT_PREFIX", "%q is not a subject prefix (dot-separated tokens without spaces, '*' or '>')", c.NATSSubjectPrefix)
				break
			}
		}
		between("NATS_REPLICAS", c.NATSReplicas, 1, 5)
		// What JetStream refuses in a stream's configuration, said here
		// with the variables' names rather than as an error from NATS.
		if c.HistoryTTL > 0 && c.HistoryTTL < 100*time.Millisecond {
			bad("HISTORY_TTL", "must be at least 100ms with SSE_BROKER=nats (JetStream's minimum max age; got %s)", c.HistoryTTL)
		}
		if c.IdempotencyWindow > 0 && c.IdempotencyWindow < 100*time.Millisecond {
			bad("IDEMPOTENCY_WINDOW", "must be at least 100ms with SSE_BROKER=nats (JetStream's minimum duplicate window; got %s)", c.IdempotencyWindow)
		}
		if c.IdempotencyWindow > c.HistoryTTL && c.HistoryTTL >= 100*time.Millisecond {
			bad("IDEMPOTENCY_WINDOW", "must not be longer than SSE_HISTORY_TTL (%s) with SSE_BROKER=nats: JetStream cannot remember a message id longer than it keeps the message (got %s)", c.HistoryTTL, c.IdempotencyWindow)
		}
		if c.MaxBatchEvents > 1000 {
			bad("MAX_BATCH_EVENTS", "must be at most 1000 with SSE_BROKER=nats: a batch is stored atomically, and JetStream takes up to 1000 messages in one atomic batch (got %d)", c.MaxBatchEvents)
		}
		for name, path := range map[string]string{"NATS_CREDS_FILE": c.NATSCredsFile, "NATS_CA_FILE": c.NATSCAFile} {
			if path != "" {
				if _, err := os.Stat(path); err != nil {
					bad(name, "%v", err)
				}
			}
		}
	default:
		bad("BROKER", "%q is not one of: memory, nats", c.Broker)
	}
	return r, errs
}
