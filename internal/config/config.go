// Package config reads the service's settings from SSE_* environment
// variables and checks them, naming every bad variable at once.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the environment variable prefix.
const Prefix = "SSE"

// Config is every setting of the service. The zero value is not useful: use
// Load, which fills the defaults in the struct tags.
type Config struct {
	Addr      string `envconfig:"ADDR" default:":8080" desc:"public listener: stream, publish API, demo page, /openapi.yaml"`
	AdminAddr string `envconfig:"ADMIN_ADDR" default:":9090" desc:"admin listener: /metrics, /healthz, /readyz (never route it through the ingress)"`
	PProf     bool   `envconfig:"PPROF" default:"false" desc:"serve /debug/pprof/ on the admin listener"`

	LogFormat string `envconfig:"LOG_FORMAT" default:"text" desc:"log format: text or json"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`

	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"15s" desc:"idle time after which a stream gets a comment line (keep it well under proxy read timeouts)"`
	Retry             time.Duration `envconfig:"RETRY" default:"2s" desc:"reconnect delay announced to clients in the first frame (retry:)"`
	ClockInterval     time.Duration `envconfig:"CLOCK_INTERVAL" default:"1s" desc:"how often the clock topic gets the time; 0 turns it off"`

	HistorySize        int           `envconfig:"HISTORY_SIZE" default:"1000" desc:"events kept per topic for resume"`
	HistoryTTL         time.Duration `envconfig:"HISTORY_TTL" default:"1h" desc:"how long events are kept for resume"`
	IdempotencyWindow  time.Duration `envconfig:"IDEMPOTENCY_WINDOW" default:"2m" desc:"how long an Idempotency-Key is remembered"`
	HistoryMaxBytes    int64         `envconfig:"HISTORY_MAX_BYTES" default:"67108864" desc:"memory all retained history may take, in bytes (SSE_BROKER=memory): above it the oldest events of any topic are evicted, and a resume from before them gets sse-gap; keep it under a quarter of the memory limit (docs/limits.md)"`
	IdempotencyMaxKeys int           `envconfig:"IDEMPOTENCY_MAX_KEYS" default:"200000" desc:"Idempotency-Keys remembered at most (SSE_BROKER=memory; ~100 bytes each): above it the oldest is forgotten before its window ends"`

	ReplayMaxBytes  int           `envconfig:"REPLAY_MAX_BYTES" default:"8388608" desc:"most bytes one resume replays (8 MiB); a resume that needs more gets what fits, then an sse-gap (reason replay-limit), and should reload its state"`
	ReplayRate      int           `envconfig:"REPLAY_RATE" default:"67108864" desc:"bytes per second all replays together may send (64 MiB/s): concurrent resumes share it, so a flood of them cannot starve live streams; 0 means no limit"`
	ClientBuffer    int           `envconfig:"CLIENT_BUFFER" default:"256" desc:"events queued per subscriber before it is dropped as slow"`
	WriteTimeout    time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s" desc:"deadline of each write to a subscriber; a client that misses it is dropped"`
	WriteDelay      time.Duration `envconfig:"WRITE_DELAY" default:"0s" desc:"when positive, a stream writes at most once per this delay, batching the events in between: less CPU per event for streams with many events per second, at up to this much extra latency"`
	SendBuffer      int           `envconfig:"SEND_BUFFER" default:"32768" desc:"kernel send buffer (SO_SNDBUF) of each stream's socket in bytes, so a stalled client is noticed quickly; 0 leaves the kernel's autotuning"`
	MaxConnections  int           `envconfig:"MAX_CONNECTIONS" default:"10000" desc:"open streams allowed in this instance; 0 means no limit"`
	MaxConnsPerIP   int           `envconfig:"MAX_CONNECTIONS_PER_IP" default:"100" desc:"open streams allowed per client address (IPv6: per /64), so one address never takes every slot; 0 means no limit. Behind a proxy set SSE_TRUSTED_PROXIES, or every client counts as the proxy's address (docs/limits.md)"`
	TrustedProxies  []string      `envconfig:"TRUSTED_PROXIES" desc:"comma-separated CIDRs of proxies whose X-Forwarded-For is believed for the client address (the right-most address not in them); empty: none, the client is the peer"`
	MaxTopics       int           `envconfig:"MAX_TOPICS_PER_STREAM" default:"32" desc:"topics one stream may subscribe to"`
	ReconnectJitter time.Duration `envconfig:"RECONNECT_JITTER" default:"5s" desc:"on shutdown and on 429/503, clients are told to come back after a random delay below this"`

	MaxNonStreamConns      int           `envconfig:"MAX_NON_STREAM_CONNECTIONS" default:"2048" desc:"connections that are not event streams (waiting for a request, idle between requests, or serving one) held at once; at the cap the longest-idle one, else one waiting over 1s for its request, is closed for a new one, or the new one is closed at once; 0 means no limit"`
	MaxNonStreamConnsPerIP int           `envconfig:"MAX_NON_STREAM_CONNECTIONS_PER_IP" default:"256" desc:"connections that are not streams one peer address (IPv6: /64) outside SSE_TRUSTED_PROXIES may hold while SSE_MAX_NON_STREAM_CONNECTIONS is at least half used; 0 means no limit"`
	IdleTimeout            time.Duration `envconfig:"IDLE_TIMEOUT" default:"75s" desc:"how long a keep-alive connection may wait for its next request (keep it above the idle timeout of proxies in front, 60s for nginx and most load balancers)"`

	PublishTokens     []string `envconfig:"PUBLISH_TOKENS" desc:"comma-separated bearer tokens allowed to publish; none set and no file: one is generated and logged at start"`
	PublishTokensFile string   `envconfig:"PUBLISH_TOKENS_FILE" desc:"file with publish tokens, one per line or comma separated (a mounted Kubernetes secret)"`
	MaxEventBytes     int      `envconfig:"MAX_EVENT_BYTES" default:"65536" desc:"largest publish request body in bytes (413 above)"`
	MaxBatchEvents    int      `envconfig:"MAX_BATCH_EVENTS" default:"1000" desc:"most events in one batch publish"`
	MaxBatchBytes     int      `envconfig:"MAX_BATCH_BYTES" default:"1048576" desc:"largest batch publish body in bytes (413 above)"`

	PrivateTopics    []string      `envconfig:"PRIVATE_TOPICS" desc:"comma-separated topic patterns that need a JWT to subscribe (* matches any run of characters); * alone: every topic but clock; empty: all topics public"`
	JWTSecret        string        `envconfig:"JWT_SECRET" desc:"HS256 shared secret of subscriber and publisher JWTs (at least 32 bytes)"`
	JWTSecretFile    string        `envconfig:"JWT_SECRET_FILE" desc:"file holding the HS256 secret, e.g. a mounted Kubernetes secret (a trailing newline is ignored)"`
	JWTPublicKeyFile string        `envconfig:"JWT_PUBLIC_KEY_FILE" desc:"PEM public key or certificate verifying RS256 or ES256 JWTs"`
	JWTJWKSURL       string        `envconfig:"JWT_JWKS_URL" desc:"JWKS URL of the identity provider (Keycloak, Auth0, Dex): fetched at start, refreshed, and fetched again for an unknown kid"`
	JWTJWKSRefresh   time.Duration `envconfig:"JWT_JWKS_REFRESH" default:"5m" desc:"how often the JWKS is fetched again"`
	JWTIssuer        string        `envconfig:"JWT_ISSUER" desc:"required iss claim (checked when set)"`
	JWTAudience      string        `envconfig:"JWT_AUDIENCE" desc:"required aud claim (checked when set)"`
	JWTLeeway        time.Duration `envconfig:"JWT_LEEWAY" default:"0s" desc:"clock skew allowed on exp and nbf (up to 5m); a stream ends at exp plus this"`
	JWTAllowNoExp    bool          `envconfig:"JWT_ALLOW_NO_EXP" default:"false" desc:"accept tokens without exp (their streams never end); off: refused with 401"`
	AuthCookie       string        `envconfig:"AUTH_COOKIE" default:"sse_token" desc:"cookie that may carry a subscriber's JWT (looked at after the Authorization header, before ?access_token=)"`
	CORSOrigins      []string      `envconfig:"CORS_ORIGINS" desc:"origins allowed to subscribe and publish from browsers, comma separated, such as https://app.example.com (with credentials); * allows any origin without credentials; empty: same origin only"`

	Broker            string `envconfig:"BROKER" default:"memory" desc:"where events live: memory (one instance) or nats (replicas share them through NATS JetStream)"`
	NATSURL           string `envconfig:"NATS_URL" desc:"NATS server URLs, comma separated (required with SSE_BROKER=nats), e.g. nats://nats:4222"`
	NATSCredsFile     string `envconfig:"NATS_CREDS_FILE" desc:"NATS credentials file (optional)"`
	NATSCAFile        string `envconfig:"NATS_CA_FILE" desc:"CA certificate file for TLS to NATS (optional)"`
	NATSStream        string `envconfig:"NATS_STREAM" default:"SSE" desc:"JetStream stream name"`
	NATSSubjectPrefix string `envconfig:"NATS_SUBJECT_PREFIX" default:"sse" desc:"subject prefix of the stream's subjects"`
	NATSReplicas      int    `envconfig:"NATS_REPLICAS" default:"1" desc:"stream replicas when the service creates the stream (1, 3 or 5 in a cluster)"`
	NATSManageStream  bool   `envconfig:"NATS_MANAGE_STREAM" default:"true" desc:"create or update the stream with SSE_HISTORY_SIZE, SSE_HISTORY_TTL and SSE_IDEMPOTENCY_WINDOW; false: it must exist"`

	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"time allowed for the drain on SIGTERM before the process exits"`
}

// Load reads the environment, applies defaults and validates. The error
// names every bad variable, whether it did not parse or is out of range.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process(Prefix, &c); err == nil {
		return c, c.Validate()
	}
	// envconfig stops at the first variable that does not parse: parse
	// each field on its own, in a struct made of just that field, so every
	// bad one is named. Range checks run on the fields that did parse.
	t := reflect.TypeFor[Config]()
	v := reflect.ValueOf(&c).Elem()
	bad := map[string]bool{}
	var errs []error
	for i := range t.NumField() {
		one := reflect.New(reflect.StructOf([]reflect.StructField{t.Field(i)}))
		err := envconfig.Process(Prefix, one.Interface())
		var pe *envconfig.ParseError
		switch {
		case errors.As(err, &pe):
			bad[pe.KeyName] = true
			errs = append(errs, fmt.Errorf("%s: %q is not a valid %s", pe.KeyName, pe.Value, typeName(pe.TypeName)))
		case err != nil:
			errs = append(errs, err)
		default:
			v.Field(i).Set(one.Elem().Field(0))
		}
	}
	for _, p := range c.problems() {
		if !bad[p.name] {
			errs = append(errs, p)
		}
	}
	return Config{}, errors.Join(errs...)
}

func typeName(t string) string {
	switch t {
	case "time.Duration":
		return "duration (such as 500ms, 15s, 2m, 1h)"
	case "int":
		return "integer"
	case "bool":
		return "boolean (true or false)"
	}
	return t
}

// Usage writes every variable with its type, default and description, as
// an aligned table.
func Usage(w io.Writer) error {
	var c Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := envconfig.Usagef(Prefix, &c, tw, envconfig.DefaultTableFormat); err != nil {
		return err
	}
	return tw.Flush()
}

// Unknown returns the SSE_* variables in environ (as os.Environ gives it)
// that are not settings, such as typos or settings of a newer version, so
// they can be reported instead of silently ignored.
func Unknown(environ []string) []string {
	known := map[string]bool{}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		known[Prefix+"_"+t.Field(i).Tag.Get("envconfig")] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, Prefix+"_") && !known[k] {
			out = append(out, k)
		}
	}
	return out
}

// problem is one bad setting.
type problem struct {
	name string // the full variable name, e.g. SSE_ADDR
	msg  string
}

func (p problem) Error() string { return p.name + ": " + p.msg }

// Validate returns every problem at once, each naming its variable and
// what it accepts.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, p)
	}
	return errors.Join(errs...)
}

func (c Config) problems() []problem {
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
	if _, err := c.TrustedPrefixes(); err != nil {
		bad("TRUSTED_PROXIES", "%v (want comma-separated CIDRs such as 10.0.0.0/8,fd00::/8)", err)
	}
	for _, t := range c.PublishTokens {
		if strings.TrimSpace(t) == "" {
			continue // "a,b," has an empty last entry, as Tokens reads it
		}
		if err := checkToken(t); err != nil {
			bad("PUBLISH_TOKENS", "%v", err)
			break
		}
	}
	if c.PublishTokensFile != "" {
		if _, err := ReadTokensFile(c.PublishTokensFile); err != nil {
			bad("PUBLISH_TOKENS_FILE", "%v", err)
		}
	}
	errs = append(errs, c.authProblems()...)
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
	return errs
}

// TrustedPrefixes parses TrustedProxies. A bare address means that one host.
func (c Config) TrustedPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR or address", s)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Tokens returns the configured publish tokens: the variable's and the
// file's together. None means the caller should generate one.
func (c Config) Tokens() ([]string, error) {
	var out []string
	for _, t := range c.PublishTokens {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	if c.PublishTokensFile != "" {
		ts, err := ReadTokensFile(c.PublishTokensFile)
		if err != nil {
			return nil, fmt.Errorf("%s_PUBLISH_TOKENS_FILE: %w", Prefix, err)
		}
		out = append(out, ts...)
	}
	return out, nil
}

// ReadTokensFile reads tokens separated by newlines or commas; blank lines
// and lines starting with # are ignored. An existing file with no token is
// an error: it would leave publishing open to nobody by accident.
func ReadTokensFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, t := range strings.Split(line, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if err := checkToken(t); err != nil {
					return nil, fmt.Errorf("%s: %w", path, err)
				}
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return out, nil
}

// checkToken refuses tokens too short to be secret or that cannot travel
// in an Authorization header.
func checkToken(t string) error {
	t = strings.TrimSpace(t)
	if len(t) < 16 {
		return errors.New("each token must be at least 16 characters")
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 0x21 || t[i] > 0x7e {
			return errors.New("tokens must be printable ASCII without spaces")
		}
	}
	return nil
}
