package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// The demo page in Chromium: the clock ticks, and an event published with
// the page's own form arrives on the topic it subscribed to.
func TestDemoPageInBrowser(t *testing.T) {
	svc := startService(t, "service", map[string]string{"SSE_CLOCK_INTERVAL": "250ms"})
	b := startBrowser(t)
	b.goto_(svc.public + "/")

	b.waitFor(`Number(document.querySelector('#clock-count').textContent) >= 3`, "three clock ticks")
	var clock struct{ Text, State, Count string }
	b.eval(`({ text: document.querySelector('#clock').textContent,
	           state: document.querySelector('#clock-state').textContent,
	           count: document.querySelector('#clock-count').textContent })`, &clock)
	if clock.State != "open" || !strings.HasSuffix(clock.Text, "Z") {
		t.Fatalf("clock %+v, want an open stream showing an RFC 3339 UTC time", clock)
	}

	b.fill("#topic-input", "browser-demo")
	b.click("#subscribe-btn")
	b.waitFor(`document.querySelector('#topic-state').textContent === 'open'`, "the topic stream to open")
	b.fill("#pub-token", publishToken)
	b.fill("#pub-data", "hello from the page's form")
	b.click("#publish-btn")
	// The event can reach the stream before the publish's answer reaches
	// the page: wait for both.
	b.waitFor(`document.querySelector('#events li[data-id]') &&
	           document.querySelector('#pub-result').textContent.includes(document.querySelector('#events li[data-id]').dataset.id)`,
		"the published event in the log and its id in the publish result")
	var got struct{ ID, Data, Result string }
	b.eval(`({ id: document.querySelector('#events li[data-id]').dataset.id,
	           data: document.querySelector('#events li[data-id] .data').textContent,
	           result: document.querySelector('#pub-result').textContent })`, &got)
	if got.Data != "hello from the page's form" || got.ID == "" || !strings.Contains(got.Result, got.ID) {
		t.Fatalf("event log %+v: want the published data, its id, and the id in the publish result", got)
	}
	b.screenshot("-demo-page")
}

// The browser's own EventSource through a TCP proxy that the test severs:
// events published while the browser is cut off arrive after its automatic
// reconnect, in order, with no gap and no duplicate, because it sends
// Last-Event-ID.
func TestEventSourceResumesAfterCut(t *testing.T) {
	svc := startService(t, "service", map[string]string{
		"SSE_CLOCK_INTERVAL": "0",
		"SSE_RETRY":          "200ms", // the browser's reconnect delay
	})
	proxy := startTCPProxy(t, hostPort(svc.public))
	b := startBrowser(t)
	b.goto_(proxy.url() + "/")
	b.openCollector("/v1/events?topic=browser-order")
	b.waitFor(`window.__sse.opens === 1`, "the EventSource to open")

	var want []browserEvent
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			data := "event " + strconv.Itoa(i)
			want = append(want, browserEvent{Type: "message", ID: svc.publish("browser-order", data), Data: data})
		}
	}
	publish(1, 50)
	b.waitFor(`window.__sse.events.length >= 50`, "the first 50 events")

	proxy.hold()
	proxy.sever()
	b.waitFor(`window.__sse.errors >= 1`, "the browser to notice the cut")
	publish(51, 100) // while the browser cannot reach the service
	proxy.release()
	b.waitFor(`window.__sse.events.length >= 100 && window.__sse.opens >= 2`, "the events published during the cut")

	got, opens, errors := b.collected()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d:\n%s", len(got), len(want), fmtIDs(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %+v, want %+v (a gap, a duplicate or a reorder)", i, got[i], want[i])
		}
	}
	if opens != 2 || errors != 1 {
		t.Errorf("opens %d, errors %d: want one reconnect", opens, errors)
	}
	// The reconnect (on a new connection, whose first request the proxy
	// reads) carried the id of the last event seen before the cut.
	var resume []string
	for _, r := range proxy.seen() {
		if r.URL.Path == "/v1/events" && r.URL.Query().Get("topic") == "browser-order" {
			resume = append(resume, r.Header.Get("Last-Event-ID"))
		}
	}
	if len(resume) == 0 || resume[len(resume)-1] != want[49].ID {
		t.Fatalf("Last-Event-ID of the stream requests %q, want the last one to be %q", resume, want[49].ID)
	}
}

// A payload that tries to inject SSE fields reaches the browser as data of
// one event, and the browser's lastEventId is the service's id.
func TestInjectionArrivesAsData(t *testing.T) {
	svc := startService(t, "service", map[string]string{"SSE_CLOCK_INTERVAL": "0"})
	b := startBrowser(t)
	b.goto_(svc.public + "/")
	b.openCollector("/v1/events?topic=browser-inject")
	b.waitFor(`window.__sse.opens === 1`, "the EventSource to open")

	payloads := []string{
		"line\nid: 999\nevent: evil\n\ndata: injected",
		"cr\rretry: 1\r\rdata: x",
		"crlf\r\nevent: sse-gap\r\n\r\ndata: {}",
		": not a comment\n\n",
		"\x00nul and ünïcødé \u2028",
	}
	var want []browserEvent
	for _, p := range payloads {
		id := svc.publish("browser-inject", p)
		// EventSource joins data lines with LF: CR and CRLF arrive as LF.
		data := strings.ReplaceAll(strings.ReplaceAll(p, "\r\n", "\n"), "\r", "\n")
		want = append(want, browserEvent{Type: "message", ID: id, Data: data})
	}
	marker := svc.publish("browser-inject", "end")
	want = append(want, browserEvent{Type: "message", ID: marker, Data: "end"})
	b.waitFor(`window.__sse.events.some((e) => e.data === 'end')`, "the marker event")
	got, opens, _ := b.collected()
	if len(got) != len(want) || opens != 1 {
		t.Fatalf("got %d events (opens %d), want %d:\n%s", len(got), opens, len(want), fmtIDs(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("payload %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
