// Command sse-bench is the load generator of sse-service. It opens many SSE
// streams on one topic, publishes events at a fixed rate once they are all
// open, and reports whether every stream received every event in order, the
// delivery latency, and (with -pid) the server's memory per stream and CPU
// per delivered event. It only ever targets loopback addresses.
//
// Usage:
//
//	sse-bench -url http://127.0.0.1:8080 -token T -streams 1000 -rate 50 -pid 1234
//
// It exits 0 when all streams connected and no event was lost, duplicated or
// reordered, 1 when a check failed, and 2 on bad flags or a failed start.
// Run it with -h for every flag; -json prints the report as JSON on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/sse-service/sse-service/cmd/sse-bench/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	urls, sources, pids string
	cpuProfile          string
	json                bool
	cfg                 bench.Config
}

// run parses args, runs the benchmark and writes the report; it returns the
// exit code.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sse-bench:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	opts.cfg.Log = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := resolve(ctx, opts); err != nil {
		fmt.Fprintln(stderr, "sse-bench:", err)
		return 2
	}
	defer context.AfterFunc(ctx, func() {
		log.Info("interrupted: stopping early; interrupt again to quit at once")
		stop() // a second interrupt kills the process
	})()
	if opts.cpuProfile != "" {
		stopProfile, err := startCPUProfile(opts.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "sse-bench:", err)
			return 2
		}
		defer stopProfile()
	}

	report, err := bench.Run(ctx, opts.cfg)
	if err != nil {
		fmt.Fprintln(stderr, "sse-bench:", err)
		return 2
	}
	if err := writeReport(report, opts.json, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "sse-bench: write report:", err)
		return 2
	}
	if !report.OK {
		return 1
	}
	return 0
}

// parseFlags defines and parses the flags.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("sse-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `sse-bench loads an sse-service on this machine: once every -url answers (it
waits up to -wait for a server that is still starting), it opens -streams SSE
streams on -topic, publishes -rate events/s for -duration once they are all
open (after -warmup), waits -drain for the last deliveries, then reports deliveries,
gaps, duplicates, latency and, with -pid, the server's RSS per stream and CPU
per delivery. It stops by itself, and early on SIGINT or SIGTERM (still
reporting). Loopback targets only. Linux only (epoll, /proc).
Exit status: 0 pass, 1 a check failed (streams not connected, gaps,
duplicates, missing deliveries), 2 bad flags or a failed start.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.urls, "url", "http://127.0.0.1:8080",
		"base `URLs` of the service, comma separated; streams and publishes go round-robin over them.\nOnly loopback hosts (127.0.0.0/8, ::1, localhost) are accepted")
	fs.IntVar(&c.Streams, "streams", 1000, "number of concurrent SSE streams")
	fs.StringVar(&o.sources, "sources", "127.0.0.1-127.0.0.8",
		"local source `addresses` streams are dialed from, round-robin: loopback addresses and IPv4 ranges,\ncomma separated (each address has its own ~28k ephemeral ports); empty lets the kernel choose")
	fs.IntVar(&c.Dials, "dials", 200, "streams being opened at once, at most")
	fs.StringVar(&c.Topic, "topic", "bench", "topic to subscribe and publish to (with -topics, the prefix of the topic names)")
	fs.IntVar(&c.Topics, "topics", 1, fmt.Sprintf("number of topics, 1 to %d: -topic-0, -topic-1, ...; stream i subscribes to topic i mod -topics,\npublisher lane l publishes to topic l mod -topics (so -publishers must be at least -topics)", bench.MaxLanes))
	fs.StringVar(&c.Token, "token", "", "publish bearer token (required unless -rate 0)")
	fs.StringVar(&c.SubscribeToken, "subscribe-token", "", "bearer token of the streams: a JWT whose sse.subscribe claim covers -topic, for a private topic")
	fs.Float64Var(&c.Rate, "rate", 50, "events per second to publish; 0 only holds the streams open")
	fs.IntVar(&c.Batch, "batch", 1, "events per publish request, 1 to 1000; above 1 uses the batch endpoint POST /v1/events")
	fs.IntVar(&c.Size, "size", 64, fmt.Sprintf("payload `bytes` per event, %d to %d", bench.MinPayloadSize, bench.MaxPayloadSize))
	fs.IntVar(&c.Publishers, "publishers", 4,
		fmt.Sprintf("concurrent publisher goroutines, 1 to %d; each sends one request at a time with its own sequence numbers", bench.MaxLanes))
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "measurement window: publishing time after the warmup")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "publishing time before the measurement window (checked, not measured)")
	fs.DurationVar(&c.Drain, "drain", 2*time.Second, "wait for deliveries after publishing stops")
	fs.DurationVar(&c.Wait, "wait", 30*time.Second,
		"how long the -url targets have to answer (GET /openapi.yaml) before streams are opened, e.g. a server just started; 0 does not wait")
	fs.DurationVar(&c.Settle, "settle", time.Second, "pause after all streams are open before the server's RSS is read")
	fs.IntVar(&c.Pollers, "pollers", max(1, runtime.GOMAXPROCS(0)/2),
		"goroutines reading the streams, each with its own epoll set and 64 KiB buffer;\nthe default, half the CPUs, leaves the rest to the server")
	fs.StringVar(&o.pids, "pid", "",
		"server process `ids`, comma separated (in -url order), to read RSS and CPU from /proc")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write sse-bench's own CPU profile to `file` (go tool pprof)")
	fs.BoolVar(&o.json, "json", false, "also print the report as JSON: JSON goes to stdout, the text report to stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// resolve turns the list flags into the configuration's targets, sources
// and pids.
func resolve(ctx context.Context, o *options) error {
	var err error
	if o.cfg.Targets, err = bench.ParseTargets(ctx, o.urls); err != nil {
		return fmt.Errorf("-url: %w", err)
	}
	if o.cfg.Sources, err = bench.ParseSources(o.sources); err != nil {
		return fmt.Errorf("-sources: %w", err)
	}
	if o.cfg.PIDs, err = bench.ParsePIDs(o.pids); err != nil {
		return fmt.Errorf("-pid: %w", err)
	}
	return o.cfg.Validate()
}

// startCPUProfile profiles this process into path until the returned
// function is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// writeReport writes the text report to stdout, or with asJSON the text to
// stderr and the JSON to stdout.
func writeReport(r *bench.Report, asJSON bool, stdout, stderr io.Writer) error {
	if !asJSON {
		return r.WriteText(stdout)
	}
	if err := r.WriteText(stderr); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
