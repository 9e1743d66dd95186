// Package config reads the service's settings from SSE_* environment
// variables and checks them, naming every bad variable at once.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/broker/memory"
	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/httpapi"
	"github.com/sse-service/sse-service/internal/stream"
)

// Prefix is the environment variable prefix.
const Prefix = "SSE"

// Config is every setting of the service. The zero value is not useful: use
// Load, which starts from Defaults.
type Config struct {
	Addr      string `envconfig:"ADDR" desc:"public listener: stream, publish API, demo page, /openapi.yaml"`
	AdminAddr string `envconfig:"ADMIN_ADDR" desc:"admin listener: /metrics, /healthz, /readyz (never route it through the ingress)"`
	PProf     bool   `envconfig:"PPROF" desc:"serve /debug/pprof/ on the admin listener"`

	LogFormat string `envconfig:"LOG_FORMAT" desc:"log format: text or json"`
	LogLevel  string `envconfig:"LOG_LEVEL" desc:"log level: debug, info, warn or error"`

	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" desc:"idle time after which a stream gets a comment line (keep it well under proxy read timeouts)"`
	Retry             time.Duration `envconfig:"RETRY" desc:"reconnect delay announced to clients in the first frame (retry:)"`
	ClockInterval     time.Duration `envconfig:"CLOCK_INTERVAL" desc:"how often the clock topic gets the time; 0 turns it off"`

	HistorySize        int           `envconfig:"HISTORY_SIZE" desc:"events kept per topic for resume"`
	HistoryTTL         time.Duration `envconfig:"HISTORY_TTL" desc:"how long events are kept for resume"`
	IdempotencyWindow  time.Duration `envconfig:"IDEMPOTENCY_WINDOW" desc:"how long an Idempotency-Key is remembered"`
	HistoryMaxBytes    int64         `envconfig:"HISTORY_MAX_BYTES" desc:"memory all retained history may take, in bytes (SSE_BROKER=memory): above it the oldest events of any topic are evicted, and a resume from before them gets sse-gap; keep it under a quarter of the memory limit (docs/limits.md)"`
	IdempotencyMaxKeys int           `envconfig:"IDEMPOTENCY_MAX_KEYS" desc:"Idempotency-Keys remembered at most (SSE_BROKER=memory; ~100 bytes each): above it the oldest is forgotten before its window ends"`

	ReplayMaxBytes  int           `envconfig:"REPLAY_MAX_BYTES" desc:"most bytes one resume replays (8 MiB); a resume that needs more gets what fits, then an sse-gap (reason replay-limit), and should reload its state"`
	ReplayRate      int           `envconfig:"REPLAY_RATE" desc:"bytes per second all replays together may send (64 MiB/s): concurrent resumes share it, so a flood of them cannot starve live streams; 0 means no limit"`
	ClientBuffer    int           `envconfig:"CLIENT_BUFFER" desc:"events queued per subscriber before it is dropped as slow"`
	WriteTimeout    time.Duration `envconfig:"WRITE_TIMEOUT" desc:"deadline of each write to a subscriber; a client that misses it is dropped"`
	WriteDelay      time.Duration `envconfig:"WRITE_DELAY" desc:"when positive, a stream writes at most once per this delay, batching the events in between: less CPU per event for streams with many events per second, at up to this much extra latency"`
	SendBuffer      int           `envconfig:"SEND_BUFFER" desc:"kernel send buffer (SO_SNDBUF) of each stream's socket in bytes, so a stalled client is noticed quickly; 0 leaves the kernel's autotuning"`
	MaxConnections  int           `envconfig:"MAX_CONNECTIONS" desc:"open streams allowed in this instance; 0 means no limit"`
	MaxConnsPerIP   int           `envconfig:"MAX_CONNECTIONS_PER_IP" desc:"open streams allowed per client address (IPv6: per /64), so one address never takes every slot; 0 means no limit. Behind a proxy set SSE_TRUSTED_PROXIES, or every client counts as the proxy's address (docs/limits.md)"`
	TrustedProxies  []string      `envconfig:"TRUSTED_PROXIES" desc:"comma-separated CIDRs of proxies whose X-Forwarded-For is believed for the client address (the right-most address not in them); empty: none, the client is the peer"`
	MaxTopics       int           `envconfig:"MAX_TOPICS_PER_STREAM" desc:"topics one stream may subscribe to"`
	ReconnectJitter time.Duration `envconfig:"RECONNECT_JITTER" desc:"on shutdown and on 429/503, clients are told to come back after a random delay below this"`

	MaxNonStreamConns      int           `envconfig:"MAX_NON_STREAM_CONNECTIONS" desc:"connections that are not event streams (waiting for a request, idle between requests, or serving one) held at once; at the cap the longest-idle one, else one waiting over 1s for its request, is closed for a new one, or the new one is closed at once; 0 means no limit"`
	MaxNonStreamConnsPerIP int           `envconfig:"MAX_NON_STREAM_CONNECTIONS_PER_IP" desc:"connections that are not streams one peer address (IPv6: /64) outside SSE_TRUSTED_PROXIES may hold while SSE_MAX_NON_STREAM_CONNECTIONS is at least half used; 0 means no limit"`
	IdleTimeout            time.Duration `envconfig:"IDLE_TIMEOUT" desc:"how long a keep-alive connection may wait for its next request (keep it above the idle timeout of proxies in front, 60s for nginx and most load balancers)"`

	PublishTokens     []string `envconfig:"PUBLISH_TOKENS" desc:"comma-separated bearer tokens allowed to publish; none set and no file: one is generated and logged at start"`
	PublishTokensFile string   `envconfig:"PUBLISH_TOKENS_FILE" desc:"file with publish tokens, one per line or comma separated (a mounted Kubernetes secret)"`
	MaxEventBytes     int      `envconfig:"MAX_EVENT_BYTES" desc:"largest publish request body in bytes (413 above)"`
	MaxBatchEvents    int      `envconfig:"MAX_BATCH_EVENTS" desc:"most events in one batch publish"`
	MaxBatchBytes     int      `envconfig:"MAX_BATCH_BYTES" desc:"largest batch publish body in bytes (413 above)"`

	PrivateTopics    []string      `envconfig:"PRIVATE_TOPICS" desc:"comma-separated topic patterns that need a JWT to subscribe (* matches any run of characters); * alone: every topic but clock; empty: all topics public"`
	JWTSecret        string        `envconfig:"JWT_SECRET" desc:"HS256 shared secret of subscriber and publisher JWTs (at least 32 bytes)"`
	JWTSecretFile    string        `envconfig:"JWT_SECRET_FILE" desc:"file holding the HS256 secret, e.g. a mounted Kubernetes secret (a trailing newline is ignored)"`
	JWTPublicKeyFile string        `envconfig:"JWT_PUBLIC_KEY_FILE" desc:"PEM public key or certificate verifying RS256 or ES256 JWTs"`
	JWTJWKSURL       string        `envconfig:"JWT_JWKS_URL" desc:"JWKS URL of the identity provider (Keycloak, Auth0, Dex): fetched at start, refreshed, and fetched again for an unknown kid"`
	JWTJWKSRefresh   time.Duration `envconfig:"JWT_JWKS_REFRESH" desc:"how often the JWKS is fetched again"`
	JWTIssuer        string        `envconfig:"JWT_ISSUER" desc:"required iss claim (checked when set)"`
	JWTAudience      string        `envconfig:"JWT_AUDIENCE" desc:"required aud claim (checked when set)"`
	JWTLeeway        time.Duration `envconfig:"JWT_LEEWAY" desc:"clock skew allowed on exp and nbf (up to 5m); a stream ends at exp plus this"`
	JWTAllowNoExp    bool          `envconfig:"JWT_ALLOW_NO_EXP" desc:"accept tokens without exp (their streams never end); off: refused with 401"`
	AuthCookie       string        `envconfig:"AUTH_COOKIE" desc:"cookie that may carry a subscriber's JWT (looked at after the Authorization header, before ?access_token=)"`
	CORSOrigins      []string      `envconfig:"CORS_ORIGINS" desc:"origins allowed to subscribe and publish from browsers, comma separated, such as https://app.example.com (with credentials); * allows any origin without credentials; empty: same origin only"`

	Broker            string `envconfig:"BROKER" desc:"where events live: memory (one instance) or nats (replicas share them through NATS JetStream)"`
	NATSURL           string `envconfig:"NATS_URL" desc:"NATS server URLs, comma separated (required with SSE_BROKER=nats), e.g. nats://nats:4222"`
	NATSCredsFile     string `envconfig:"NATS_CREDS_FILE" desc:"NATS credentials file (optional)"`
	NATSCAFile        string `envconfig:"NATS_CA_FILE" desc:"CA certificate file for TLS to NATS (optional)"`
	NATSStream        string `envconfig:"NATS_STREAM" desc:"JetStream stream name"`
	NATSSubjectPrefix string `envconfig:"NATS_SUBJECT_PREFIX" desc:"subject prefix of the stream's subjects"`
	NATSReplicas      int    `envconfig:"NATS_REPLICAS" desc:"stream replicas when the service creates the stream (1, 3 or 5 in a cluster)"`
	NATSManageStream  bool   `envconfig:"NATS_MANAGE_STREAM" desc:"create or update the stream with SSE_HISTORY_SIZE, SSE_HISTORY_TTL and SSE_IDEMPOTENCY_WINDOW; false: it must exist"`

	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" desc:"time allowed for the drain on SIGTERM before the process exits"`

	// Resolved is what Load derives from the variables above: parsed, and
	// files read, once. It is not a variable.
	Resolved Resolved `ignored:"true"`
}

// Resolved holds the settings Load parses or reads from files, so nothing
// after Load parses a variable again or meets an error Load did not report.
type Resolved struct {
	// TrustedProxies from SSE_TRUSTED_PROXIES (a bare address is a /32 or
	// /128); empty: none.
	TrustedProxies []netip.Prefix
	// PrivateTopics from SSE_PRIVATE_TOPICS; empty: every topic is public.
	PrivateTopics auth.Patterns
	// CORSOrigins from SSE_CORS_ORIGINS, as browsers send them
	// (scheme://host[:port], lower case), or "*".
	CORSOrigins []string
	// PublishTokens from SSE_PUBLISH_TOKENS and SSE_PUBLISH_TOKENS_FILE
	// together; empty: the service generates one.
	PublishTokens []string
	// JWT configures the verifier (the secret and key files read); nil
	// when no key source is set. Its Logger is left to the caller.
	JWT *auth.Config
}

// Defaults returns every setting at its default. This is the one place a
// default is written: where a package has its own (what a zero option
// means), the setting's default is that constant.
func Defaults() Config {
	return Config{
		Addr:              ":8080",
		AdminAddr:         ":9090",
		LogFormat:         "text",
		LogLevel:          "info",
		HeartbeatInterval: stream.DefaultHeartbeatInterval,
		Retry:             stream.DefaultRetry,
		ClockInterval:     time.Second,

		HistorySize:        stream.DefaultHistorySize,
		HistoryTTL:         stream.DefaultHistoryTTL,
		IdempotencyWindow:  stream.DefaultIdempotencyWindow,
		HistoryMaxBytes:    memory.DefaultMaxBytes,
		IdempotencyMaxKeys: memory.DefaultMaxKeys,

		ReplayMaxBytes:  stream.DefaultReplayMaxBytes,
		ReplayRate:      stream.DefaultReplayRate,
		ClientBuffer:    stream.DefaultClientBuffer,
		WriteTimeout:    stream.DefaultWriteTimeout,
		SendBuffer:      32 << 10,
		MaxConnections:  10_000,
		MaxConnsPerIP:   100,
		MaxTopics:       32,
		ReconnectJitter: stream.DefaultReconnectJitter,

		MaxNonStreamConns:      2048,
		MaxNonStreamConnsPerIP: 256,
		IdleTimeout:            httpapi.DefaultIdleTimeout,

		MaxEventBytes:  64 << 10,
		MaxBatchEvents: 1000,
		MaxBatchBytes:  1 << 20,

		JWTJWKSRefresh: auth.DefaultJWKSRefresh,
		AuthCookie:     "sse_token",

		Broker:            "memory",
		NATSStream:        natsbroker.DefaultStream,
		NATSSubjectPrefix: natsbroker.DefaultSubjectPrefix,
		NATSReplicas:      natsbroker.DefaultReplicas,
		NATSManageStream:  true,

		ShutdownTimeout: 25 * time.Second,
	}
}

// Load reads the environment over Defaults, validates, and resolves what
// needs parsing or reading (Config.Resolved). The error names every bad
// variable, whether it did not parse or is out of range.
func Load() (Config, error) {
	c := Defaults()
	if err := envconfig.Process(Prefix, &c); err == nil {
		return c.resolve()
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
		one.Elem().Field(0).Set(v.Field(i)) // the default
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
	_, problems := c.resolved()
	problems = slices.DeleteFunc(problems, func(p problem) bool { return bad[p.name] })
	return Config{}, errors.Join(append(errs, joinProblems(problems))...)
}

// resolve fills c.Resolved, or returns every problem.
func (c Config) resolve() (Config, error) {
	r, problems := c.resolved()
	if err := joinProblems(problems); err != nil {
		return Config{}, err
	}
	c.Resolved = r
	return c, nil
}

// joinProblems is every problem as one error, nil for none.
func joinProblems(problems []problem) error {
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

func typeName(t string) string {
	switch t {
	case "time.Duration":
		return "duration (such as 500ms, 15s, 2m, 1h)"
	case "int", "int64":
		return "integer"
	case "bool":
		return "boolean (true or false)"
	}
	return t
}

// parsePrefixes parses CIDRs; a bare address means that one host.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
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

// readTokensFile reads tokens separated by newlines or commas; blank lines
// and lines starting with # are ignored. An existing file with no token is
// an error: it would leave publishing open to nobody by accident.
func readTokensFile(path string) ([]string, error) {
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
