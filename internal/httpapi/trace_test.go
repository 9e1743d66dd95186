package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/metrics"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// tracedServer is the API with real metrics and an SDK tracer provider
// recording into memory.
type tracedServer struct {
	url      string
	hub      *stream.Hub
	spans    *tracetest.InMemoryExporter
	registry *prometheus.Registry
	shutdown func()
}

func startTraced(t *testing.T) *tracedServer {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.DiscardHandler)
	broker := memory.New(memory.Options{})
	hub := stream.NewHub(broker, m, log, stream.Options{Tracer: tp.Tracer("test")})
	srv := NewServer(hub, m, log, Options{
		PublishTokens: []string{testToken}, MaxTopics: 8, MaxEventBytes: 1 << 10,
		MaxBatchEvents: 10, MaxBatchBytes: 10 << 10, ReconnectJitter: time.Second,
		Static: testStatic, TracerProvider: tp, Propagator: propagation.TraceContext{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ts := &tracedServer{url: "http://" + ln.Addr().String(), hub: hub, spans: spans, registry: reg}
	var once bool
	ts.shutdown = func() {
		if once {
			return
		}
		once = true
		hub.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		broker.Close()
	}
	t.Cleanup(ts.shutdown)
	return ts
}

// span returns the one ended span named name, failing otherwise.
func (ts *tracedServer) span(t *testing.T, name string) tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []tracetest.SpanStub
		for _, s := range ts.spans.GetSpans() {
			if s.Name == name {
				found = append(found, s)
			}
		}
		if len(found) == 1 {
			return found[0]
		}
		if len(found) > 1 || time.Now().After(deadline) {
			var names []string
			for _, s := range ts.spans.GetSpans() {
				names = append(names, s.Name)
			}
			t.Fatalf("%d spans named %q; spans: %q", len(found), name, names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func (ts *tracedServer) publish(t *testing.T, topic, data string, header http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/v1/topics/"+topic+"/events", strings.NewReader(`{"data":"`+data+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: %d %s", resp.StatusCode, b)
	}
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(b)), `{"id":"`), `"}`)
}

// openStream subscribes over a connection of its own and reads the first
// frame; the stream ends when the test does or its connection is closed.
func (ts *tracedServer) openStream(t *testing.T, path string, header http.Header) *ssetest.Stream {
	t.Helper()
	st := ssetest.Dial(t, strings.TrimPrefix(ts.url, "http://"), path, header)
	if st.Response.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %s", st.Response.Status)
	}
	if frame, err := st.ReadFrame(); err != nil {
		t.Fatalf("first frame %q: %v", frame, err)
	}
	return st
}

// readUntil reads events until the one with id.
func readUntil(t *testing.T, st *ssetest.Stream, id string) {
	t.Helper()
	for st.Next(t).ID != id {
	}
}

func TestPublishSpanIsAProducerChildOfTheRequestAndCarriesTheID(t *testing.T) {
	ts := startTraced(t)
	parent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	id := ts.publish(t, "orders", "x", http.Header{"Traceparent": {parent}})

	pub := ts.span(t, "publish orders")
	req := ts.span(t, "POST "+routePublish)
	if pub.SpanKind != trace.SpanKindProducer {
		t.Fatalf("publish span kind %s, want producer", pub.SpanKind)
	}
	if pub.Parent.SpanID() != req.SpanContext.SpanID() {
		t.Fatalf("publish span's parent is %s, want the request span %s", pub.Parent.SpanID(), req.SpanContext.SpanID())
	}
	if got := req.SpanContext.TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("request span trace %s, want the incoming traceparent's", got)
	}
	for key, want := range map[string]string{
		"messaging.system":           stream.MessagingSystem,
		"messaging.operation.type":   "send",
		"messaging.destination.name": "orders",
		"messaging.message.id":       id,
	} {
		if got := attr(pub, key).Emit(); got != want {
			t.Errorf("publish span %s = %q, want %q", key, got, want)
		}
	}
	if got := attr(req, "http.route").Emit(); got != routePublish {
		t.Errorf("request span http.route = %q, want %q", got, routePublish)
	}
}

func TestStreamSpanLastsForTheConnection(t *testing.T) {
	tests := []struct {
		name   string
		end    func(ts *tracedServer, conn net.Conn)
		reason string
	}{
		{"client disconnects", func(_ *tracedServer, conn net.Conn) { conn.Close() }, string(stream.ClosedByClient)},
		{"server drains", func(ts *tracedServer, _ net.Conn) { ts.shutdown() }, string(stream.DroppedShutdown)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startTraced(t)
			st := ts.openStream(t, "/v1/events?topic=t", nil)
			id := ts.publish(t, "t", "one", nil)
			readUntil(t, st, id)
			for _, s := range ts.spans.GetSpans() {
				if s.Name == "GET "+routeSubscribe {
					t.Fatal("the stream span ended while the stream was open")
				}
			}
			tt.end(ts, st.Conn)
			span := ts.span(t, "GET "+routeSubscribe)
			if span.SpanKind != trace.SpanKindServer {
				t.Fatalf("stream span kind %s", span.SpanKind)
			}
			if got := attr(span, "sse.events_sent").AsInt64(); got != 1 {
				t.Fatalf("sse.events_sent = %d, want 1", got)
			}
			if got := attr(span, "sse.close_reason").AsString(); got != tt.reason {
				t.Fatalf("sse.close_reason = %q, want %q", got, tt.reason)
			}
		})
	}
}

func TestStreamSpanLinksToTheReplayedEventsPublishSpans(t *testing.T) {
	ts := startTraced(t)
	first := ts.publish(t, "t", "before", nil)
	ts.publish(t, "t", "missed 1", nil)
	last := ts.publish(t, "t", "missed 2", nil)
	ts.openStream(t, "/v1/events?topic=t", http.Header{"Last-Event-Id": {first}}).Conn.Close()
	span := ts.span(t, "GET "+routeSubscribe)

	var publishes []trace.SpanContext
	for _, s := range ts.spans.GetSpans() {
		if s.Name == "publish t" {
			publishes = append(publishes, s.SpanContext)
		}
	}
	if len(span.Links) != 2 || span.Links[0].SpanContext.SpanID() != publishes[1].SpanID() || span.Links[1].SpanContext.SpanID() != publishes[2].SpanID() {
		t.Fatalf("stream span links %+v, want the publish spans of the 2 replayed events", span.Links)
	}
	if got := attr(span, "sse.events_replayed").AsInt64(); got != 2 {
		t.Fatalf("sse.events_replayed = %d, want 2 (last %s)", got, last)
	}
}

func TestDeliveryHistogramCarriesThePublishTraceAsExemplar(t *testing.T) {
	ts := startTraced(t)
	st := ts.openStream(t, "/v1/events?topic=t", nil)
	id := ts.publish(t, "t", "x", nil)
	readUntil(t, st, id)
	traceID := ts.span(t, "publish t").SpanContext.TraceID().String()

	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := ts.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "sse_event_delivery_seconds" {
				continue
			}
			for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
				for _, l := range b.GetExemplar().GetLabel() {
					if l.GetName() == "trace_id" && l.GetValue() == traceID {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no exemplar with trace_id %s on sse_event_delivery_seconds", traceID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
