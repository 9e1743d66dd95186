package e2e

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// matrixHeartbeat is the services' heartbeat interval in the client matrix:
// short, so that idling over several heartbeats takes about a second.
const matrixHeartbeat = 300 * time.Millisecond

// The client matrix (issue 13): five SSE client libraries that users put in
// front of the service, each through a proxy the test can cut, in five
// scenarios:
//
//   - live: events published while it is connected;
//   - idle: several heartbeats with no event, then an event;
//   - cut: the network severs every connection on an idle stream and refuses
//     new ones while events are published, then lets the client back in;
//   - drain: two replicas on one NATS JetStream behind a front proxy that
//     routes to ready replicas; the one the client is on gets SIGTERM;
//   - rejection: SSE_MAX_CONNECTIONS_PER_IP=1, the slot taken by another
//     stream from the client's address while it is cut off, so that its
//     reconnects are refused (200 + sse-reconnect) until the slot is freed.
//
// For every client and scenario: every published event reaches the
// application exactly once, in publish order; no sse-gap; no phantom event
// (an unnamed event with no data: the service's control events are named);
// and the client came back by itself: the test never touches it, and each
// new stream request (seen by the proxy) resumed with Last-Event-ID = the id
// of the last event it had.
//
// One exception is measured rather than hidden: r3labs/sse dispatches
// whatever partial frame is pending when a connection breaks (its scanner
// returns the rest at EOF, and it gives every event the last id, so the
// rest counts as content). A cut right after a heartbeat comment hands the
// application one empty message there. For r3labs the test allows such
// empty events only right at a cut, at most one per cut, and says so in its
// output; for the four others any phantom fails the test.
//
// The clients run in parallel, each against its own topics (and for the
// drain its own replicas); a summary table is logged at the end.
func TestClientMatrix(t *testing.T) {
	common := map[string]string{
		"SSE_HEARTBEAT_INTERVAL": matrixHeartbeat.String(),
		"SSE_RETRY":              "500ms",
		// Refusals say retry in 1-2 s; a drain spreads reconnects over 1 s.
		"SSE_RECONNECT_JITTER": "1s",
		"SSE_CLOCK_INTERVAL":   "0",
	}
	live := startService(t, "matrix-live", withEnv(common, map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "0"}))
	limited := startService(t, "matrix-limited", withEnv(common, map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "1"}))
	natsURL := natstest.Start(t).URL()
	// A stream states its position (sse-position) once its service holds an
	// event: the clients' sign that they are connected.
	live.publish("matrix-warmup", "warm up")
	limited.publish("matrix-warmup", "warm up")

	table := &matrixTable{}
	t.Cleanup(func() { t.Log(table) })
	for i, lib := range matrixLibs() {
		row := table.add(lib.name)
		t.Run(lib.name, func(t *testing.T) {
			t.Parallel()
			t.Cleanup(func() {
				if t.Skipped() {
					row.setVersion("skipped: a tool is missing (see the test's log)")
				}
			})
			open, version := lib.prepare(t)
			row.setVersion(version)
			t.Logf("%s: %s", lib.name, version)

			// live, idle and cut: one client, through one proxy, in turn.
			proxy := startCutProxy(t, hostPort(live.public), "")
			r := newMatrixRun(t, lib, open, proxy, live.public, "matrix-"+lib.name)
			_ = row.run(t, "live", func(t *testing.T) string { r.t = t; return r.live() }) &&
				row.run(t, "idle", func(t *testing.T) string { r.t = t; return r.idle() }) &&
				row.run(t, "cut", func(t *testing.T) string { r.t = t; return r.cut() })
			r.client.close()

			row.run(t, "drain", func(t *testing.T) string {
				return matrixDrain(t, lib, open, withEnv(common, map[string]string{
					"SSE_BROKER":                 "nats",
					"SSE_NATS_URL":               natsURL,
					"SSE_NATS_STREAM":            fmt.Sprintf("MATRIX%d", i),
					"SSE_NATS_SUBJECT_PREFIX":    fmt.Sprintf("matrix%d", i),
					"SSE_MAX_CONNECTIONS_PER_IP": "0",
				}))
			})
			row.run(t, "rejection", func(t *testing.T) string {
				// Each client comes from an address of its own, so that the
				// per-address limit of 1 is its alone.
				return matrixRejection(t, lib, open, limited, fmt.Sprintf("127.0.0.%d", 21+i))
			})
		})
	}
}

// matrixRun is one client of the matrix following one topic, and what the
// test published to it.
type matrixRun struct {
	t      *testing.T
	lib    matrixLib
	client matrixClient
	proxy  *cutProxy
	pub    string // base URL of the service events are published to
	topic  string
	sent   []sentEvent
	cuts   []int // len(sent) at each cut
	// phantoms found so far (see check), and how many were reported.
	phantoms, reported int
}

type sentEvent struct{ id, data string }

// newMatrixRun opens a client on topic through proxy, and waits until its
// stream is open.
func newMatrixRun(t *testing.T, lib matrixLib, open func(*testing.T, string) matrixClient, proxy *cutProxy, pub, topic string) *matrixRun {
	t.Helper()
	r := &matrixRun{t: t, lib: lib, proxy: proxy, pub: pub, topic: topic}
	r.client = open(t, proxy.url()+"/v1/events?topic="+url.QueryEscape(topic))
	r.waitFor("the stream to open (its sse-position event)", func(evs []seenEvent) bool {
		return slices.ContainsFunc(evs, func(e seenEvent) bool { return e.Type == "sse-position" })
	})
	return r
}

// publish publishes n events to the run's topic.
func (r *matrixRun) publish(n int) {
	r.t.Helper()
	for range n {
		data := fmt.Sprintf("%s #%d", r.topic, len(r.sent)+1)
		r.sent = append(r.sent, sentEvent{publishTo(r.t, r.pub, r.topic, data), data})
	}
}

// waitUntil polls cond until it holds. The 30 s guard only bounds a broken
// run; a client that gives up fails at once.
func (r *matrixRun) waitUntil(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if why := r.client.stopped(); why != "" {
			r.t.Fatalf("%s gave up while the test waited for %s: %s\nit had: %s", r.lib.name, what, why, fmtSeen(r.client.events()))
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: no %s after 30s\nit had: %s", r.lib.name, what, fmtSeen(r.client.events()))
		}
	}
}

// waitFor waits until the client's events satisfy cond, and returns them.
func (r *matrixRun) waitFor(what string, cond func([]seenEvent) bool) []seenEvent {
	r.t.Helper()
	var evs []seenEvent
	r.waitUntil(what, func() bool { evs = r.client.events(); return cond(evs) })
	return evs
}

// waitDelivered waits for the last published event and checks everything
// the client handed over so far.
func (r *matrixRun) waitDelivered() {
	r.t.Helper()
	last := r.sent[len(r.sent)-1].data
	r.check(r.waitFor(fmt.Sprintf("event %q", last), func(evs []seenEvent) bool {
		return slices.ContainsFunc(evs, func(e seenEvent) bool { return e.Data == last })
	}))
}

// check asserts what the client handed to the application: every published
// event once, in publish order, with its id; control events only by name
// (sse-position, sse-reconnect) and no sse-gap; no phantom, except for a
// library known to dispatch a partial frame at a cut, and then only right at
// a cut, at most one per cut.
func (r *matrixRun) check(evs []seenEvent) {
	r.t.Helper()
	var got []seenEvent
	var phantoms []int // how many real events came before each phantom
	var phantomIDs []string
	for _, e := range evs {
		switch {
		case e.Type == "sse-position" || e.Type == "sse-reconnect":
		case e.Type == "sse-gap":
			r.t.Fatalf("%s got an sse-gap (%s): the service could not resume it\nit had: %s", r.lib.name, e.Data, fmtSeen(evs))
		case e.Type == "message" && e.Data == "":
			phantoms = append(phantoms, len(got))
			phantomIDs = append(phantomIDs, e.ID)
		case e.Type == "message":
			got = append(got, e)
		default:
			r.t.Fatalf("%s handed over an event of type %q (%+v)\nit had: %s", r.lib.name, e.Type, e, fmtSeen(evs))
		}
	}
	for i := range max(len(got), len(r.sent)) {
		if i >= len(got) || i >= len(r.sent) || got[i].ID != r.sent[i].id || got[i].Data != r.sent[i].data {
			r.t.Fatalf("%s: events differ from #%d on (each published event once, in order)\nwant: %s\ngot:  %s",
				r.lib.name, i+1, fmtSent(r.sent), fmtSeen(got))
		}
	}
	if len(phantoms) > 0 && !r.lib.phantomAtCuts {
		r.t.Fatalf("%s handed over %d phantom event(s) (type message, no data), after %v real events\nit had: %s",
			r.lib.name, len(phantoms), phantoms, fmtSeen(evs))
	}
	perCut := map[int]int{}
	for i, at := range phantoms {
		perCut[at]++
		if !slices.Contains(r.cuts, at) || perCut[at] > 1 {
			r.t.Fatalf("%s: empty message event #%d (id %q) after %d real events, which is not right at a cut (cuts after %v events) or a second one there\nit had: %s",
				r.lib.name, i+1, phantomIDs[i], at, r.cuts, fmtSeen(evs))
		}
	}
	if n := len(phantoms); n > r.reported {
		r.t.Logf("%s: KNOWN PHANTOM: %d empty message event(s) handed to the application, ids %q, right at the cut(s) after events %v: r3labs dispatches the heartbeat comment pending when the connection broke (tolerated for r3labs only: at a cut, at most one per cut)",
			r.lib.name, n-r.reported, phantomIDs[r.reported:], phantoms[r.reported:])
		r.reported = n
	}
	r.phantoms = len(phantoms)
}

// expectResumed asserts that the client opened a new stream by itself after
// the proxy had seen mark stream requests, and that every such request
// resumed after the event it had last before the disruption (the published
// event #from). With later, events could still reach it during the
// disruption (a drain): a request may then resume after a later event it
// had, never going back. It returns the requests.
func (r *matrixRun) expectResumed(mark, from int, later bool) []proxiedRequest {
	r.t.Helper()
	reqs := r.proxy.streamRequests()[mark:]
	if len(reqs) == 0 {
		r.t.Fatalf("%s opened no new stream after the disruption", r.lib.name)
	}
	at := from - 1
	for i, q := range reqs {
		j := slices.IndexFunc(r.sent, func(e sentEvent) bool { return e.id == q.lastEventID })
		if j != at && (!later || j < at) {
			r.t.Fatalf("%s: stream request %d after the disruption sent Last-Event-ID %q, want %q (the last event it had)",
				r.lib.name, i+1, q.lastEventID, r.sent[at].id)
		}
		at = j
	}
	return reqs
}

// streamsNote says how many stream requests a client made after a
// disruption, and how many of them the service answered with sse-reconnect.
func streamsNote(reqs []proxiedRequest) string {
	told := 0
	for _, q := range reqs {
		if q.toldToReconnect {
			told++
		}
	}
	return fmt.Sprintf("%d stream request(s), %d answered sse-reconnect", len(reqs), told)
}

// idleBeat waits until a heartbeat went to the client after its last event:
// a cut then hits an idle stream, as it mostly does in real life.
func (r *matrixRun) idleBeat() {
	r.t.Helper()
	_, h0 := r.proxy.counts()
	r.waitUntil("heartbeat after the last event", func() bool { _, h := r.proxy.counts(); return h > h0 })
}

// phantomNote says how many phantoms the last scenario had, if any.
func (r *matrixRun) phantomNote(before int) string {
	if n := r.phantoms - before; n > 0 {
		return fmt.Sprintf("; %d empty message at the cut (known r3labs)", n)
	}
	return ""
}

// live: events published while the client is connected arrive, on the one
// connection it opened.
func (r *matrixRun) live() string {
	r.publish(5)
	r.waitDelivered()
	if n := len(r.proxy.streamRequests()); n != 1 {
		r.t.Fatalf("%s opened %d streams, want 1", r.lib.name, n)
	}
	return "ok"
}

// idle: the stream lives through several heartbeats without reconnecting,
// and the next event arrives.
func (r *matrixRun) idle() string {
	mark := len(r.proxy.streamRequests())
	_, h0 := r.proxy.counts()
	var beats int
	r.waitUntil("3 heartbeats", func() bool { _, h := r.proxy.counts(); beats = h - h0; return beats >= 3 })
	if n := len(r.proxy.streamRequests()) - mark; n != 0 {
		r.t.Fatalf("%s opened %d new stream(s) while idle", r.lib.name, n)
	}
	r.publish(1)
	r.waitDelivered()
	return fmt.Sprintf("ok: %d heartbeats", beats)
}

// cut: the network cuts every connection and refuses new ones while events
// are published; once it lets connections through again, the client
// resumes by itself and gets them.
func (r *matrixRun) cut() string {
	r.idleBeat()
	mark, from, before := len(r.proxy.streamRequests()), len(r.sent), r.phantoms
	refused0, _ := r.proxy.counts()
	r.proxy.setRefuse(true)
	r.proxy.sever()
	r.cuts = append(r.cuts, len(r.sent))
	r.publish(3)
	r.waitUntil("reconnect attempt while the network refuses", func() bool { n, _ := r.proxy.counts(); return n > refused0 })
	r.proxy.setRefuse(false)
	r.waitDelivered()
	r.publish(2)
	r.waitDelivered()
	reqs := r.expectResumed(mark, from, false)
	refused, _ := r.proxy.counts()
	return fmt.Sprintf("ok: %d connection(s) refused, %d stream request(s)%s", refused-refused0, len(reqs), r.phantomNote(before))
}

// matrixDrain: the client follows a topic on replica A behind a front
// proxy; A gets SIGTERM while events are published on B. The client must
// reconnect through the front proxy to B by itself and resume with nothing
// lost.
func matrixDrain(t *testing.T, lib matrixLib, open func(*testing.T, string) matrixClient, env map[string]string) string {
	a := startService(t, "matrix-"+lib.name+"-a", env)
	b := startService(t, "matrix-"+lib.name+"-b", env)
	a.publish("matrix-warmup", "warm up")
	front := startFrontProxy(t)
	front.add(a)
	front.waitReady(t, 1)
	proxy := startCutProxy(t, hostPort(front.url()), "")
	r := newMatrixRun(t, lib, open, proxy, a.public, "matrix-drain-"+lib.name)
	r.publish(3)
	r.waitDelivered()

	front.add(b)
	front.waitReady(t, 2)
	mark, from, seen := len(r.proxy.streamRequests()), len(r.sent), len(r.client.events())
	since := time.Now()
	a.terminate()
	r.pub = b.public
	r.publish(3) // during the drain and the reconnect
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("replica A exited with %d after SIGTERM", code)
	}
	front.remove(a)
	r.publish(2) // after A is gone
	r.waitDelivered()
	// Replica A may still send some of the events published on B before
	// it closes the stream: the client then resumes after those.
	reqs := r.expectResumed(mark, from, true)

	onB := 0
	for _, a := range front.since(since) {
		if a.to == b.name {
			onB++
		}
	}
	if onB == 0 {
		t.Fatalf("%s never reached replica B after the drain", lib.name)
	}
	told := reconnectReasons(r.client.events()[seen:])
	if told["draining"] == 0 {
		t.Fatalf("%s was not handed the drain's sse-reconnect event (reasons seen: %v)", lib.name, told)
	}
	return "ok: " + streamsNote(reqs)
}

// matrixRejection: the client is cut off, and while it is away another
// stream from its address takes the only slot (SSE_MAX_CONNECTIONS_PER_IP=1),
// so that its reconnects are refused with 200 + sse-reconnect. Once the slot
// is free it must come back by itself and get what was published meanwhile.
func matrixRejection(t *testing.T, lib matrixLib, open func(*testing.T, string) matrixClient, svc *service, source string) string {
	proxy := startCutProxy(t, hostPort(svc.public), source)
	r := newMatrixRun(t, lib, open, proxy, svc.public, "matrix-limit-"+lib.name)
	r.publish(2)
	r.waitDelivered()

	r.idleBeat()
	mark, from, seen, before := len(r.proxy.streamRequests()), len(r.sent), len(r.client.events()), r.phantoms
	r.proxy.setRefuse(true)
	r.proxy.sever()
	r.cuts = append(r.cuts, len(r.sent))
	other := holdStreamSlot(t, source, svc.public, "/v1/events?topic="+url.QueryEscape(r.topic+"-other"))
	defer other.Close()
	r.publish(2) // while it is cut off
	r.proxy.setRefuse(false)
	r.waitFor("refusal (200 + sse-reconnect, reason ip_limit)", func(evs []seenEvent) bool {
		return reconnectReasons(evs[seen:])["ip_limit"] > 0
	})
	r.publish(1) // while it is refused
	other.Close()
	r.waitDelivered()
	r.publish(1) // live again
	r.waitDelivered()
	reqs := r.expectResumed(mark, from, false)
	return "ok: " + streamsNote(reqs) + r.phantomNote(before)
}

// reconnectReasons counts the sse-reconnect events in evs by reason.
func reconnectReasons(evs []seenEvent) map[string]int {
	reasons := map[string]int{}
	for _, e := range evs {
		if e.Type != "sse-reconnect" {
			continue
		}
		var d struct{ Reason string }
		_ = json.Unmarshal([]byte(e.Data), &d)
		reasons[d.Reason]++
	}
	return reasons
}

// withEnv returns base with extra added.
func withEnv(base, extra map[string]string) map[string]string {
	env := maps.Clone(base)
	maps.Copy(env, extra)
	return env
}

// originOf is the scheme and host of rawURL.
func originOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Scheme + "://" + u.Host
}

func fmtSeen(evs []seenEvent) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Type == "message" {
			fmt.Fprintf(&b, "%s=%q ", e.ID, e.Data)
		} else {
			fmt.Fprintf(&b, "[%s %s %s] ", e.Type, e.ID, e.Data)
		}
	}
	return b.String()
}

func fmtSent(evs []sentEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s=%q ", e.id, e.data)
	}
	return b.String()
}

// matrixTable collects each client's result per scenario for the summary.
type matrixTable struct {
	mu   sync.Mutex // guards rows and their fields
	rows []*matrixRow
}

type matrixRow struct {
	table   *matrixTable
	name    string
	version string
	cells   map[string]string
}

var matrixScenarios = []string{"live", "idle", "cut", "drain", "rejection"}

func (m *matrixTable) add(name string) *matrixRow {
	m.mu.Lock()
	defer m.mu.Unlock()
	row := &matrixRow{table: m, name: name, cells: map[string]string{}}
	m.rows = append(m.rows, row)
	return row
}

func (row *matrixRow) setVersion(v string) {
	row.table.mu.Lock()
	defer row.table.mu.Unlock()
	row.version = v
}

// run runs one scenario as a subtest and records its cell: f's summary, or
// FAIL.
func (row *matrixRow) run(t *testing.T, scenario string, f func(t *testing.T) string) bool {
	return t.Run(scenario, func(t *testing.T) {
		cell := "FAIL"
		defer func() {
			row.table.mu.Lock()
			defer row.table.mu.Unlock()
			row.cells[scenario] = cell
		}()
		cell = f(t)
	})
}

func (m *matrixTable) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	b.WriteString("client matrix (ok: every event once, in order, no sse-gap, no phantom, reconnected by itself):\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "client\tversion\t%s\n", strings.Join(matrixScenarios, "\t"))
	for _, row := range m.rows {
		fmt.Fprintf(w, "%s\t%s", row.name, cmp.Or(row.version, "-"))
		for _, s := range matrixScenarios {
			fmt.Fprintf(w, "\t%s", cmp.Or(row.cells[s], "-"))
		}
		fmt.Fprintln(w)
	}
	_ = w.Flush()
	return b.String()
}
