package config

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// clearEnv removes every SSE_* variable for the duration of the test, so
// the machine's environment cannot change the outcome.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, Prefix+"_") {
			t.Setenv(k, "") // restores the value after the test
			if err := os.Unsetenv(k); err != nil {
				t.Fatalf("unset %s: %v", k, err)
			}
		}
	}
}

// setEnv sets SSE_<name> for each entry of vars.
func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for k, v := range vars {
		t.Setenv(Prefix+"_"+k, v)
	}
}

// writeFile writes content to a new file in a temporary directory and
// returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
	return p
}

const (
	tokA = "aaaaaaaaaaaaaaaa"
	tokB = "bbbbbbbbbbbbbbbbbbbb"
	tokC = "cccccccccccccccc-c"
)

func TestLoadDefaults(t *testing.T) {
	clearEnv(t)
	c, err := Load()
	if err != nil {
		t.Fatalf("Load with no SSE_* variable: %v", err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"Addr", c.Addr, ":8080"},
		{"AdminAddr", c.AdminAddr, ":9090"},
		{"PProf", c.PProf, false},
		{"LogFormat", c.LogFormat, "text"},
		{"LogLevel", c.LogLevel, "info"},
		{"HeartbeatInterval", c.HeartbeatInterval, 15 * time.Second},
		{"ClockInterval", c.ClockInterval, time.Second},
		{"HistorySize", c.HistorySize, 1000},
		{"HistoryTTL", c.HistoryTTL, time.Hour},
		{"IdempotencyWindow", c.IdempotencyWindow, 2 * time.Minute},
		{"SendBuffer", c.SendBuffer, 32768},
		{"MaxConnections", c.MaxConnections, 10000},
		{"MaxConnsPerIP", c.MaxConnsPerIP, 100},
		{"MaxNonStreamConns", c.MaxNonStreamConns, 2048},
		{"MaxNonStreamConnsPerIP", c.MaxNonStreamConnsPerIP, 256},
		{"IdleTimeout", c.IdleTimeout, 75 * time.Second},
		{"MaxEventBytes", c.MaxEventBytes, 65536},
		{"ShutdownTimeout", c.ShutdownTimeout, 25 * time.Second},
		{"TrustedProxies", len(c.TrustedProxies), 0},
		{"PublishTokens", len(c.PublishTokens), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("default %s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if toks := c.Resolved.PublishTokens; len(toks) != 0 {
		t.Fatalf("default publish tokens = %v; want none, so one is generated", toks)
	}
	if c.Resolved.JWT != nil {
		t.Fatalf("default JWT config = %+v; want none", c.Resolved.JWT)
	}
}

// The defaults never let one address take every slot: the per-address
// limits are on and well below the caps they share (issue 12).
func TestDefaultsKeepOneAddressFromTakingEverySlot(t *testing.T) {
	clearEnv(t)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnsPerIP <= 0 || c.MaxConnsPerIP*10 > c.MaxConnections {
		t.Errorf("default SSE_MAX_CONNECTIONS_PER_IP=%d with SSE_MAX_CONNECTIONS=%d: want it on and at most a tenth", c.MaxConnsPerIP, c.MaxConnections)
	}
	if c.MaxNonStreamConns <= 0 || c.MaxNonStreamConnsPerIP <= 0 || c.MaxNonStreamConnsPerIP*4 > c.MaxNonStreamConns {
		t.Errorf("default SSE_MAX_NON_STREAM_CONNECTIONS=%d, _PER_IP=%d: want both on, the per-IP one at most a quarter", c.MaxNonStreamConns, c.MaxNonStreamConnsPerIP)
	}
}

func TestLoadAcceptsGoodValues(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"json debug", map[string]string{"LOG_FORMAT": "json", "LOG_LEVEL": "debug"}},
		{"warn level", map[string]string{"LOG_LEVEL": "warn"}},
		{"error level", map[string]string{"LOG_LEVEL": "error"}},
		{"clock off", map[string]string{"CLOCK_INTERVAL": "0"}},
		{"send buffer off", map[string]string{"SEND_BUFFER": "0"}},
		{"send buffer at its minimum", map[string]string{"SEND_BUFFER": "4096"}},
		{"no connection limits", map[string]string{"MAX_CONNECTIONS": "0", "MAX_CONNECTIONS_PER_IP": "0"}},
		{"no non-stream connection limits", map[string]string{"MAX_NON_STREAM_CONNECTIONS": "0", "MAX_NON_STREAM_CONNECTIONS_PER_IP": "0"}},
		{"non-stream cap at its minimum", map[string]string{"MAX_NON_STREAM_CONNECTIONS": "16"}},
		{"idle timeout range ends", map[string]string{"IDLE_TIMEOUT": "1s"}},
		{"idle timeout of an hour", map[string]string{"IDLE_TIMEOUT": "1h"}},
		{"range ends", map[string]string{"HISTORY_SIZE": "1", "MAX_TOPICS_PER_STREAM": "1000", "MAX_EVENT_BYTES": "64"}},
		{"both listeners on :0", map[string]string{"ADDR": ":0", "ADMIN_ADDR": ":0"}},
		{"both listeners on 127.0.0.1:0", map[string]string{"ADDR": "127.0.0.1:0", "ADMIN_ADDR": "127.0.0.1:0"}},
		{"trusted proxies", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1,fd00::/8"}},
		{"tokens", map[string]string{"PUBLISH_TOKENS": tokA + "," + tokB}},
		{"tokens with a trailing comma", map[string]string{"PUBLISH_TOKENS": tokA + ","}},
		{"pprof", map[string]string{"PPROF": "true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			if _, err := Load(); err != nil {
				t.Fatalf("Load with %v: %v", tt.env, err)
			}
		})
	}
}

func TestLoadRejectsBadValuesNamingTheVariable(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		// want are substrings of the error: the variable and what it accepts.
		want []string
	}{
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, []string{"SSE_LOG_FORMAT", `"xml"`, "text, json"}},
		{"log level", map[string]string{"LOG_LEVEL": "trace"}, []string{"SSE_LOG_LEVEL", `"trace"`, "debug, info, warn, error"}},
		{"log level is case sensitive", map[string]string{"LOG_LEVEL": "INFO"}, []string{"SSE_LOG_LEVEL"}},
		{"zero heartbeat", map[string]string{"HEARTBEAT_INTERVAL": "0"}, []string{"SSE_HEARTBEAT_INTERVAL", "positive duration"}},
		{"negative retry", map[string]string{"RETRY": "-1s"}, []string{"SSE_RETRY", "positive duration"}},
		{"zero history ttl", map[string]string{"HISTORY_TTL": "0s"}, []string{"SSE_HISTORY_TTL", "positive duration"}},
		{"zero idempotency window", map[string]string{"IDEMPOTENCY_WINDOW": "0"}, []string{"SSE_IDEMPOTENCY_WINDOW", "positive duration"}},
		{"zero write timeout", map[string]string{"WRITE_TIMEOUT": "0"}, []string{"SSE_WRITE_TIMEOUT", "positive duration"}},
		{"zero reconnect jitter", map[string]string{"RECONNECT_JITTER": "0"}, []string{"SSE_RECONNECT_JITTER", "positive duration"}},
		{"zero shutdown timeout", map[string]string{"SHUTDOWN_TIMEOUT": "0"}, []string{"SSE_SHUTDOWN_TIMEOUT", "positive duration"}},
		{"private topics without a key", map[string]string{"PRIVATE_TOPICS": "user:*"}, []string{"SSE_PRIVATE_TOPICS", "SSE_JWT_SECRET", "SSE_JWT_JWKS_URL"}},
		{"bad private pattern", map[string]string{"PRIVATE_TOPICS": "user:*,a b", "JWT_SECRET": strings.Repeat("s", 32)}, []string{"SSE_PRIVATE_TOPICS", `"a b"`}},
		{"short JWT secret", map[string]string{"JWT_SECRET": "too-short"}, []string{"SSE_JWT_SECRET", "at least 32 bytes", "got 9"}},
		{"secret and secret file", map[string]string{"JWT_SECRET": strings.Repeat("s", 32), "JWT_SECRET_FILE": "/nonexistent"}, []string{"SSE_JWT_SECRET", "not both"}},
		{"missing secret file", map[string]string{"JWT_SECRET_FILE": "/nonexistent/secret"}, []string{"SSE_JWT_SECRET_FILE", "no such file"}},
		{"missing public key file", map[string]string{"JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, []string{"SSE_JWT_PUBLIC_KEY_FILE", "no such file"}},
		{"JWKS URL without scheme", map[string]string{"JWT_JWKS_URL": "idp.example.com/certs"}, []string{"SSE_JWT_JWKS_URL", "http or https URL"}},
		{"JWKS refresh too often", map[string]string{"JWT_JWKS_REFRESH": "10ms"}, []string{"SSE_JWT_JWKS_REFRESH", "at least 1s"}},
		{"leeway too large", map[string]string{"JWT_LEEWAY": "1h"}, []string{"SSE_JWT_LEEWAY", "0 to 5m"}},
		{"cookie name with a space", map[string]string{"AUTH_COOKIE": "sse token"}, []string{"SSE_AUTH_COOKIE", "not a cookie name"}},
		{"origin with a path", map[string]string{"CORS_ORIGINS": "https://app.example.com/page"}, []string{"SSE_CORS_ORIGINS", "not an origin"}},
		{"origin without scheme", map[string]string{"CORS_ORIGINS": "app.example.com"}, []string{"SSE_CORS_ORIGINS", "not an origin"}},
		{"negative clock", map[string]string{"CLOCK_INTERVAL": "-1s"}, []string{"SSE_CLOCK_INTERVAL", "0 (off)"}},
		{"unparsable duration", map[string]string{"HEARTBEAT_INTERVAL": "soon"}, []string{"SSE_HEARTBEAT_INTERVAL", `"soon"`, "duration"}},
		{"duration without unit", map[string]string{"WRITE_TIMEOUT": "10"}, []string{"SSE_WRITE_TIMEOUT", "duration"}},
		{"unparsable int", map[string]string{"HISTORY_SIZE": "many"}, []string{"SSE_HISTORY_SIZE", `"many"`, "integer"}},
		{"unparsable bool", map[string]string{"PPROF": "maybe"}, []string{"SSE_PPROF", "true or false"}},
		{"history size zero", map[string]string{"HISTORY_SIZE": "0"}, []string{"SSE_HISTORY_SIZE", "from 1 to 1000000"}},
		{"client buffer too big", map[string]string{"CLIENT_BUFFER": "1000001"}, []string{"SSE_CLIENT_BUFFER", "from 1 to 1000000"}},
		{"negative max connections", map[string]string{"MAX_CONNECTIONS": "-1"}, []string{"SSE_MAX_CONNECTIONS", "from 0 to"}},
		{"negative per-IP limit", map[string]string{"MAX_CONNECTIONS_PER_IP": "-1"}, []string{"SSE_MAX_CONNECTIONS_PER_IP", "from 0 to"}},
		{"negative non-stream cap", map[string]string{"MAX_NON_STREAM_CONNECTIONS": "-1"}, []string{"SSE_MAX_NON_STREAM_CONNECTIONS", "from 0 to"}},
		{"tiny non-stream cap", map[string]string{"MAX_NON_STREAM_CONNECTIONS": "15"}, []string{"SSE_MAX_NON_STREAM_CONNECTIONS", "0 (no limit) or at least 16", "got 15"}},
		{"negative non-stream per-IP cap", map[string]string{"MAX_NON_STREAM_CONNECTIONS_PER_IP": "-1"}, []string{"SSE_MAX_NON_STREAM_CONNECTIONS_PER_IP", "from 0 to"}},
		{"zero idle timeout", map[string]string{"IDLE_TIMEOUT": "0"}, []string{"SSE_IDLE_TIMEOUT", "from 1s to 1h"}},
		{"idle timeout over an hour", map[string]string{"IDLE_TIMEOUT": "2h"}, []string{"SSE_IDLE_TIMEOUT", "from 1s to 1h", "2h0m0s"}},
		{"too many topics", map[string]string{"MAX_TOPICS_PER_STREAM": "1001"}, []string{"SSE_MAX_TOPICS_PER_STREAM", "from 1 to 1000"}},
		{"tiny event limit", map[string]string{"MAX_EVENT_BYTES": "63"}, []string{"SSE_MAX_EVENT_BYTES", "from 64 to"}},
		{"empty batch limit", map[string]string{"MAX_BATCH_EVENTS": "0"}, []string{"SSE_MAX_BATCH_EVENTS", "from 1 to"}},
		{"tiny batch bytes", map[string]string{"MAX_BATCH_BYTES": "1"}, []string{"SSE_MAX_BATCH_BYTES", "from 64 to"}},
		{"send buffer 1", map[string]string{"SEND_BUFFER": "1"}, []string{"SSE_SEND_BUFFER", "at least 4096"}},
		{"send buffer 4095", map[string]string{"SEND_BUFFER": "4095"}, []string{"SSE_SEND_BUFFER", "at least 4096"}},
		{"negative send buffer", map[string]string{"SEND_BUFFER": "-1"}, []string{"SSE_SEND_BUFFER", "from 0 to"}},
		{"empty addr", map[string]string{"ADDR": ""}, []string{"SSE_ADDR", "must not be empty"}},
		{"same addr twice", map[string]string{"ADDR": ":7000", "ADMIN_ADDR": ":7000"}, []string{"SSE_ADMIN_ADDR", "must differ from SSE_ADDR"}},
		{"admin on the default public port", map[string]string{"ADMIN_ADDR": ":8080"}, []string{"SSE_ADMIN_ADDR", `":8080"`}},
		{"trusted proxy bad CIDR", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, []string{"SSE_TRUSTED_PROXIES", `"10.0.0.0/33"`, "CIDR"}},
		{"trusted proxy not an address", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, []string{"SSE_TRUSTED_PROXIES", `"proxy.local"`}},
		{"short token", map[string]string{"PUBLISH_TOKENS": tokA + ",short"}, []string{"SSE_PUBLISH_TOKENS", "at least 16 characters"}},
		{"token of 15 characters", map[string]string{"PUBLISH_TOKENS": tokA[:15]}, []string{"SSE_PUBLISH_TOKENS", "at least 16 characters"}},
		{"token with a space", map[string]string{"PUBLISH_TOKENS": "aaaaaaaa bbbbbbbbbbbb"}, []string{"SSE_PUBLISH_TOKENS", "without spaces"}},
		{"token with a non-ASCII byte", map[string]string{"PUBLISH_TOKENS": "aaaaaaaaaaaaaaaaé"}, []string{"SSE_PUBLISH_TOKENS", "printable ASCII"}},
		{"missing tokens file", map[string]string{"PUBLISH_TOKENS_FILE": "/nonexistent/sse-tokens"}, []string{"SSE_PUBLISH_TOKENS_FILE", "/nonexistent/sse-tokens"}},
		// What JetStream would refuse as a stream configuration.
		{"nats: idempotency window over the TTL", map[string]string{"BROKER": "nats", "NATS_URL": "nats://n:4222", "HISTORY_TTL": "1m", "IDEMPOTENCY_WINDOW": "2m"},
			[]string{"SSE_IDEMPOTENCY_WINDOW", "SSE_HISTORY_TTL", "1m0s", "2m0s"}},
		{"nats: TTL under 100ms", map[string]string{"BROKER": "nats", "NATS_URL": "nats://n:4222", "HISTORY_TTL": "50ms", "IDEMPOTENCY_WINDOW": "100ms"},
			[]string{"SSE_HISTORY_TTL", "at least 100ms"}},
		{"nats: window under 100ms", map[string]string{"BROKER": "nats", "NATS_URL": "nats://n:4222", "IDEMPOTENCY_WINDOW": "10ms"},
			[]string{"SSE_IDEMPOTENCY_WINDOW", "at least 100ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			_, err := Load()
			if err == nil {
				t.Fatalf("Load with %v succeeded, want an error", tt.env)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("Load with %v: error %q does not mention %q", tt.env, err, w)
				}
			}
			// Exactly one problem: a bad variable is named once, and good
			// ones are not named at all.
			if got := strings.Count(err.Error(), "\n"); got != 0 {
				t.Fatalf("Load with %v: want one problem, got:\n%v", tt.env, err)
			}
		})
	}
}

func TestLoadNamesEveryBadVariableAtOnce(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"range problems only", map[string]string{
			"LOG_FORMAT": "xml", "HEARTBEAT_INTERVAL": "0", "HISTORY_SIZE": "0",
			"SEND_BUFFER": "100", "TRUSTED_PROXIES": "nope", "PUBLISH_TOKENS": "short",
		}},
		{"parse and range problems together", map[string]string{
			"LOG_FORMAT": "xml", "HEARTBEAT_INTERVAL": "soon", "HISTORY_SIZE": "many",
			"PPROF": "maybe", "MAX_TOPICS_PER_STREAM": "0", "RETRY": "0",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, tt.env)
			_, err := Load()
			if err == nil {
				t.Fatalf("Load with %v succeeded, want an error", tt.env)
			}
			lines := strings.Split(err.Error(), "\n")
			if got, want := len(lines), len(tt.env); got != want {
				t.Fatalf("error has %d lines, want one per bad variable (%d):\n%v", got, want, err)
			}
			for k := range tt.env {
				name := Prefix + "_" + k
				n := 0
				for _, l := range lines {
					if strings.HasPrefix(l, name+":") {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("%s is named %d times, want once:\n%v", name, n, err)
				}
			}
		})
	}
}

func TestTrustedProxiesAreParsedOnce(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}},
		{"192.0.2.7", []string{"192.0.2.7/32"}},
		{"2001:db8::1", []string{"2001:db8::1/128"}},
		{"10.1.2.3/8", []string{"10.0.0.0/8"}}, // masked
		{" 10.0.0.0/8 , ,192.0.2.7", []string{"10.0.0.0/8", "192.0.2.7/32"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			clearEnv(t)
			setEnv(t, map[string]string{"TRUSTED_PROXIES": tt.in})
			c, err := Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var got []string
			ps := c.Resolved.TrustedProxies
			for _, p := range ps {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("SSE_TRUSTED_PROXIES=%q resolved to %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	t.Run("a bare address contains only itself", func(t *testing.T) {
		ps, err := parsePrefixes([]string{"192.0.2.7"})
		if err != nil || len(ps) != 1 {
			t.Fatalf("parsePrefixes = %v, %v", ps, err)
		}
		if ps[0].Contains(netip.MustParseAddr("192.0.2.8")) {
			t.Fatalf("%v contains a neighbouring address", ps[0])
		}
	})
}

func TestTokensFile(t *testing.T) {
	tests := []struct {
		name    string
		env     string // SSE_PUBLISH_TOKENS
		file    string
		want    []string
		wantErr string // substring of the Load error; "" means success
	}{
		{
			name: "one per line",
			file: tokA + "\n" + tokB + "\n",
			want: []string{tokA, tokB},
		},
		{
			name: "comments, blank lines, commas and spaces",
			file: "# publish tokens\n\n  " + tokA + " , " + tokB + "\r\n#" + tokC + "\n,\n",
			want: []string{tokA, tokB},
		},
		{
			name: "merged with the variable's tokens",
			env:  tokC,
			file: tokA,
			want: []string{tokC, tokA},
		},
		{name: "empty file", file: "", wantErr: "holds no token"},
		{name: "only comments", file: "# " + tokA + "\n\n", wantErr: "holds no token"},
		{name: "short token", file: tokA + "\nshort\n", wantErr: "at least 16 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			path := writeFile(t, tt.file)
			setEnv(t, map[string]string{"PUBLISH_TOKENS_FILE": path})
			if tt.env != "" {
				setEnv(t, map[string]string{"PUBLISH_TOKENS": tt.env})
			}
			c, err := Load()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), "SSE_PUBLISH_TOKENS_FILE") || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: err = %v, want SSE_PUBLISH_TOKENS_FILE and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := c.Resolved.PublishTokens; !slices.Equal(got, tt.want) {
				t.Fatalf("publish tokens = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTokensTrimsTheVariablesTokens(t *testing.T) {
	clearEnv(t)
	setEnv(t, map[string]string{"PUBLISH_TOKENS": " " + tokA + " , " + tokB})
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.Resolved.PublishTokens, []string{tokA, tokB}; !slices.Equal(got, want) {
		t.Fatalf("publish tokens = %q, want %q", got, want)
	}
}

func TestUsageListsEveryVariableWithinHundredColumns(t *testing.T) {
	var buf bytes.Buffer
	if err := Usage(&buf); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	out := buf.String()
	typ := reflect.TypeFor[Config]()
	n := 0
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "Resolved" {
			continue
		}
		n++
		tag := f.Tag.Get("envconfig")
		if tag == "" {
			t.Fatalf("field %s has no envconfig tag", f.Name)
		}
		if f.Tag.Get("desc") == "" {
			t.Errorf("field %s (%s) has no desc tag", f.Name, tag)
		}
		if f.Tag.Get("default") != "" {
			t.Errorf("field %s has a default tag: defaults live in Defaults()", f.Name)
		}
		if name := Prefix + "_" + tag; !strings.Contains(out, "  "+name+" (") {
			t.Errorf("Usage does not list %s:\n%s", name, out)
		}
	}
	if got := len(Variables()); got != n {
		t.Errorf("Variables() lists %d settings, want %d", got, n)
	}
	for i, line := range strings.Split(out, "\n") {
		if len(line) > 100 {
			t.Errorf("line %d is %d columns wide: %q", i+1, len(line), line)
		}
	}
	for _, want := range []string{"SSE_HEARTBEAT_INTERVAL (duration, default 15s)", "SSE_TRUSTED_PROXIES (list, default none)", "SSE_NATS_MANAGE_STREAM (bool, default true)"} {
		if !strings.Contains(out, want) {
			t.Errorf("Usage lacks %q", want)
		}
	}
}

func TestUnknownSuggestsTheNearestSetting(t *testing.T) {
	tests := []struct {
		env  string
		want []string
	}{
		{"SSE_HEARTBEAT_INTERVALL=15s", []string{"SSE_HEARTBEAT_INTERVALL (did you mean SSE_HEARTBEAT_INTERVAL?)"}},
		{"SSE_MAX_CONECTIONS=5", []string{"SSE_MAX_CONECTIONS (did you mean SSE_MAX_CONNECTIONS?)"}},
		{"SSE_LOG_FROMAT=json", []string{"SSE_LOG_FROMAT (did you mean SSE_LOG_FORMAT?)"}},
		{"sse_addr=:1", nil}, // not the prefix
		{"SSE_ADDR=:1", nil},
		{"SSE_SOMETHING_ELSE_ENTIRELY=1", []string{"SSE_SOMETHING_ELSE_ENTIRELY"}},
		{"HOME=/root", nil},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			if got := Unknown([]string{tt.env}); !slices.Equal(got, tt.want) {
				t.Fatalf("Unknown(%q) = %q, want %q", tt.env, got, tt.want)
			}
		})
	}
}

func TestAuthSettings(t *testing.T) {
	clearEnv(t)
	secretFile := writeFile(t, strings.Repeat("f", 32)+"\n")
	setEnv(t, map[string]string{
		"PRIVATE_TOPICS":  " user:* , orders ,",
		"JWT_SECRET_FILE": secretFile,
		"CORS_ORIGINS":    "https://App.Example.com, http://localhost:3000/,*",
	})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if ps := c.Resolved.PrivateTopics; ps.String() != "user:*,orders" {
		t.Fatalf("private patterns %q", ps.String())
	}
	if c.Resolved.JWT == nil || string(c.Resolved.JWT.Secret) != strings.Repeat("f", 32) {
		t.Fatalf("JWT config %+v: want the secret file without its newline", c.Resolved.JWT)
	}
	origins := c.Resolved.CORSOrigins
	if want := []string{"https://app.example.com", "http://localhost:3000", "*"}; !slices.Equal(origins, want) {
		t.Fatalf("origins %q, want %q", origins, want)
	}
	if c.AuthCookie != "sse_token" || c.JWTLeeway != 0 || c.JWTJWKSRefresh != 5*time.Minute {
		t.Fatalf("defaults: cookie %q leeway %s refresh %s", c.AuthCookie, c.JWTLeeway, c.JWTJWKSRefresh)
	}
}

// TestReadmeListsEverySettingWithItsDefault: the README's configuration
// table is what newcomers read; it must name every setting, and its
// defaults must be Defaults(), in the variable's own spelling.
func TestReadmeListsEverySettingWithItsDefault(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // name -> default cell
	for line := range strings.Lines(string(b)) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`"+Prefix+"_") {
			continue
		}
		for name := range strings.SplitSeq(cells[1], ",") { // "`SSE_A`, `SSE_B`"
			documented[strings.Trim(strings.TrimSpace(name), "`")] = strings.Trim(strings.TrimSpace(cells[2]), "`")
		}
	}
	same := func(v Variable, def string) bool {
		if v.Type == "duration" {
			a, errA := time.ParseDuration(def)
			b, errB := time.ParseDuration(v.Default)
			return errA == nil && errB == nil && a == b
		}
		return def == v.Default
	}
	for _, v := range Variables() {
		def, ok := documented[v.Name]
		if !ok {
			t.Errorf("README's table lacks %s", v.Name)
			continue
		}
		if !same(v, def) {
			t.Errorf("README gives %s the default %q, the code %q", v.Name, def, v.Default)
		}
		delete(documented, v.Name)
	}
	for name := range documented {
		t.Errorf("README lists %s, which is not a setting", name)
	}
}
