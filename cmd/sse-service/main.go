// Command sse-service serves Server-Sent Events: clients subscribe to
// topics over GET /v1/events, publishers POST events, and every event reaches
// every subscriber of its topic, with resume by Last-Event-ID.
//
// Configuration is by SSE_* environment variables; `sse-service -h` lists
// them. See README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"

	"github.com/sse-service/sse-service/api"
	"github.com/sse-service/sse-service/internal/admin"
	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/broker/memory"
	natsbroker "github.com/sse-service/sse-service/internal/broker/nats"
	"github.com/sse-service/sse-service/internal/config"
	"github.com/sse-service/sse-service/internal/httpapi"
	"github.com/sse-service/sse-service/internal/memlimit"
	"github.com/sse-service/sse-service/internal/metrics"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/telemetry"
	"github.com/sse-service/sse-service/web"
)

// version is stamped in at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "sse-service:", err)
		os.Exit(1)
	}
}

// addrs are where the listeners ended up (useful with port 0).
type addrs struct {
	Public, Admin string
}

// run builds the component graph, serves until ctx ends or SIGTERM/SIGINT
// arrives, then drains. started, when not nil, is called once both
// listeners accept connections.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, started func(addrs)) error {
	flags := flag.NewFlagSet("sse-service", flag.ContinueOnError)
	flags.SetOutput(stderr)
	showVersion := flags.Bool("version", false, "print the version and exit")
	flags.Usage = func() {
		fmt.Fprintf(stdout, "sse-service %s: Server-Sent Events hub.\n\nUsage: sse-service [-version]\n\nSettings, from the environment:\n", version)
		if err := config.Usage(stdout); err != nil {
			fmt.Fprintln(stderr, err)
		}
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version)
		return nil
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.Load()
	if err != nil {
		return fmt.Errorf("invalid configuration (sse-service -h lists every variable):\n%w", err)
	}
	log := newLogger(stderr, cfg)
	if unknown := config.Unknown(os.Environ()); len(unknown) > 0 {
		log.Warn("ignoring environment variables that are not settings (sse-service -h lists them)", "variables", unknown)
	}
	if soft, err := memlimit.Apply(); err != nil {
		log.Warn("cannot read the container's memory limit: the Go runtime has no soft limit (set GOMEMLIMIT)", "err", err)
	} else if soft > 0 {
		log.Info("Go memory limit set below the container's", "gomemlimit_bytes", soft, "share", memlimit.Share)
	}
	tokens, err := publishTokens(cfg.Resolved.PublishTokens, log)
	if err != nil {
		return err
	}

	tracing, err := telemetry.Setup(ctx, os.Getenv, version)
	if err != nil {
		return err
	}
	// The SDK reports export failures here, through our logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "err", err) }))

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.SetMaxConnections(cfg.MaxConnections)
	broker, err := newBroker(cfg, log, reg)
	if err != nil {
		return err
	}
	defer broker.Close()
	replayRate := cfg.ReplayRate
	if replayRate == 0 {
		replayRate = -1 // no limit
	}
	hub := stream.NewHub(broker, m, log, stream.Options{
		ClientBuffer:      cfg.ClientBuffer,
		WriteTimeout:      cfg.WriteTimeout,
		HeartbeatInterval: cfg.HeartbeatInterval,
		Retry:             cfg.Retry,
		ReconnectJitter:   cfg.ReconnectJitter,
		WriteDelay:        cfg.WriteDelay,
		ReplayMaxBytes:    cfg.ReplayMaxBytes,
		ReplayRate:        replayRate,
		Tracer:            tracing.Provider.Tracer("github.com/sse-service/sse-service/internal/stream"),
	})

	if cfg.MaxConnections > 0 && cfg.MaxConnsPerIP >= cfg.MaxConnections {
		log.Warn("SSE_MAX_CONNECTIONS_PER_IP is not below SSE_MAX_CONNECTIONS: one address can take every stream slot",
			"max_connections", cfg.MaxConnections, "max_connections_per_ip", cfg.MaxConnsPerIP)
	}
	verifier, err := newVerifier(ctx, cfg.Resolved.JWT, log)
	if err != nil {
		return err
	}
	if verifier != nil {
		defer verifier.Close()
	}
	static, err := fs.Sub(web.Static, "static")
	if err != nil {
		return fmt.Errorf("demo page: %w", err)
	}
	opts := httpapi.Options{
		PublishTokens:   tokens,
		MaxEventBytes:   cfg.MaxEventBytes,
		MaxBatchEvents:  cfg.MaxBatchEvents,
		MaxBatchBytes:   cfg.MaxBatchBytes,
		MaxTopics:       cfg.MaxTopics,
		MaxConnections:  cfg.MaxConnections,
		MaxConnsPerIP:   cfg.MaxConnsPerIP,
		TrustedProxies:  cfg.Resolved.TrustedProxies,
		SendBuffer:      cfg.SendBuffer,
		ReconnectJitter: cfg.ReconnectJitter,
		PrivateTopics:   cfg.Resolved.PrivateTopics,
		Verifier:        verifier,
		JWTLeeway:       cfg.JWTLeeway,
		AuthCookie:      cfg.AuthCookie,
		CORSOrigins:     cfg.Resolved.CORSOrigins,
		Static:          static,
		OpenAPI:         api.OpenAPI,
		TracerProvider:  tracing.Provider,
		Propagator:      tracing.Propagator,
	}
	// Connections that are not streams: waiting for a request, serving
	// one, idle between requests (docs/limits.md).
	opts.MaxNonStreamConns = cfg.MaxNonStreamConns
	opts.MaxNonStreamConnsPerIP = cfg.MaxNonStreamConnsPerIP
	opts.IdleTimeout = cfg.IdleTimeout
	opts.ConnMetrics = metrics.NewConns(reg)
	public := httpapi.NewServer(hub, m, log, opts)
	var ready atomic.Bool
	adminSrv := admin.NewServer(reg, log, admin.Options{
		// Ready while not draining, the hub has the broker's position and
		// the broker (if it can tell) can store and replay events.
		Ready: func() bool {
			r, ok := broker.(interface{ Ready() bool })
			return ready.Load() && hub.Ready() && (!ok || r.Ready())
		},
		PProf: cfg.PProf,
	})

	publicLn, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen SSE_ADDR %s: %w", cfg.Addr, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		publicLn.Close()
		return fmt.Errorf("listen SSE_ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}

	// Every goroutine below ends before run returns.
	var wg sync.WaitGroup
	serveErr := make(chan error, 2)
	serve := func(name string, srv interface{ Serve(net.Listener) error }, ln net.Listener) {
		wg.Go(func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("serve %s: %w", name, err)
			}
		})
	}
	serve("public", public, publicLn)
	serve("admin", adminSrv, adminLn)
	clockCtx, stopClock := context.WithCancel(context.Background())
	if cfg.ClockInterval > 0 {
		// On a shared broker every replica ticks: the clock stays local.
		local := cfg.Broker != "memory"
		wg.Go(func() { stream.RunClock(clockCtx, hub, cfg.ClockInterval, local, log) })
	}

	ready.Store(true)
	log.Info("listening", "public", publicLn.Addr().String(), "admin", adminLn.Addr().String(), "version", version)
	if started != nil {
		started(addrs{Public: publicLn.Addr().String(), Admin: adminLn.Addr().String()})
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case runErr = <-serveErr:
		log.Error("server failed, shutting down", "err", runErr)
	}
	stop() // a second signal now kills the process the default way

	// Drain: readiness off at once, new streams refused, open streams told
	// to reconnect (spread over the jitter) and closed. Shutdown then waits
	// for in-flight publishes; it does not wait for streams on its own,
	// since they never end by themselves.
	ready.Store(false)
	hub.Drain()
	stopClock()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := public.Shutdown(shutdownCtx); err != nil {
		log.Warn("drain did not finish in time, closing remaining connections", "err", err)
		public.Close()
	}
	if err := adminSrv.Shutdown(shutdownCtx); err != nil {
		adminSrv.Close()
	}
	wg.Wait()
	if err := tracing.Shutdown(shutdownCtx); err != nil {
		log.Warn("flush traces", "err", err)
	}
	log.Info("stopped")
	return runErr
}

// newVerifier builds the JWT verifier when a key source is configured
// (cfg not nil; config.Load checked it); a JWKS is fetched before the
// service starts. Whoever gets a Verifier closes it.
func newVerifier(ctx context.Context, cfg *auth.Config, log *slog.Logger) (*auth.Verifier, error) {
	if cfg == nil {
		return nil, nil
	}
	c := *cfg
	c.Logger = log
	v, err := auth.NewVerifier(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("SSE_JWT_JWKS_URL: %w", err) // the one source that can fail after Load
	}
	return v, nil
}

// newBroker returns the configured backend. The NATS one connects in the
// background: the service starts, not ready, before NATS does.
func newBroker(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (stream.Broker, error) {
	switch cfg.Broker {
	case "nats":
		b, err := natsbroker.New(natsbroker.Options{
			URL:               cfg.NATSURL,
			CredsFile:         cfg.NATSCredsFile,
			CAFile:            cfg.NATSCAFile,
			Stream:            cfg.NATSStream,
			SubjectPrefix:     cfg.NATSSubjectPrefix,
			Replicas:          cfg.NATSReplicas,
			ManageStream:      cfg.NATSManageStream,
			HistorySize:       cfg.HistorySize,
			HistoryTTL:        cfg.HistoryTTL,
			IdempotencyWindow: cfg.IdempotencyWindow,
			// Concurrent publishes to a topic reach its subscribers as one
			// burst: a quarter of their queue at most.
			MaxRound: max(1, cfg.ClientBuffer/4),
			Log:      log,
			Metrics:  metrics.NewBroker(reg),
		})
		if err != nil {
			return nil, fmt.Errorf("SSE_BROKER=nats: %w", err)
		}
		return b, nil
	default:
		b := memory.New(memory.Options{
			HistorySize:       cfg.HistorySize,
			HistoryTTL:        cfg.HistoryTTL,
			MaxBytes:          cfg.HistoryMaxBytes,
			IdempotencyWindow: cfg.IdempotencyWindow,
			MaxKeys:           cfg.IdempotencyMaxKeys,
			Log:               log,
		})
		metrics.RegisterHistory(reg, func() metrics.HistoryStats { return metrics.HistoryStats(b.Stats()) })
		return b, nil
	}
}

func newLogger(w io.Writer, cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// publishTokens returns the configured tokens, or generates one and logs it
// once, so a first run works with no setup and publishing is still not open.
func publishTokens(tokens []string, log *slog.Logger) ([]string, error) {
	if len(tokens) > 0 {
		return tokens, nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate publish token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	log.Warn("no SSE_PUBLISH_TOKENS set: generated a publish token for this run", "token", tok)
	return []string{tok}, nil
}

// durationsAsText writes durations as Go writes them ("25s"): the JSON
// handler would write nanoseconds (25000000000), which nobody reads right.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}
