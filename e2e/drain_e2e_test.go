package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sse-service/sse-service/internal/testutil/natstest"
)

// A deploy seen from the browser: the demo page, through nginx, follows a
// topic served by instance A. A gets SIGTERM (as Kubernetes sends it); the
// page reconnects by itself through nginx to instance B, and B, sharing the
// events through NATS JetStream, resumes from the page's Last-Event-ID:
// every event published before, during and after the drain is shown once,
// in order, with no sse-gap.
func TestDrainReconnectsToAnotherInstance(t *testing.T) {
	natsURL := natstest.Start(t).URL()
	env := map[string]string{
		"SSE_BROKER":             "nats",
		"SSE_NATS_URL":           natsURL,
		"SSE_CLOCK_INTERVAL":     "500ms",
		"SSE_RECONNECT_JITTER":   "1s",
		"SSE_HEARTBEAT_INTERVAL": "1s",
	}
	a := startService(t, "instance-a", env)
	b := startService(t, "instance-b", env)
	// A first; B only when A refuses (it is draining or gone), as an
	// ingress does once the draining pod is no longer ready.
	ngx := startNginx(t, 5*time.Second, 5*time.Second, hostPort(a.public), hostPort(b.public)+" backup")

	br := startBrowser(t)
	br.goto_(ngx.url + "/")
	br.waitFor(`document.querySelector('#clock-state').textContent === 'open'`, "the clock stream")
	br.fill("#topic-input", "deploy")
	br.click("#subscribe-btn")
	br.waitFor(`document.querySelector('#topic-state').textContent === 'open'`, "the topic stream")
	acceptedOnB := b.metric(`sse_connections_total{result="accepted"}`)
	if acceptedOnB != 0 {
		t.Fatalf("instance B already has %v streams: nginx did not send the page to A", acceptedOnB)
	}

	type sent struct{ id, data string }
	var want []sent
	publish := func(s *service, from, to int) {
		for i := from; i <= to; i++ {
			data := "step " + strconv.Itoa(i)
			want = append(want, sent{s.publish("deploy", data), data})
		}
	}
	publish(a, 1, 20)
	br.waitFor(`document.querySelectorAll('#events li.event').length >= 20`, "the events before the drain")
	br.screenshot("-before-drain")

	a.terminate()
	if code := status(t, b.admin+"/readyz"); code != 200 {
		t.Fatalf("B not ready: %d", code)
	}
	publish(b, 21, 40) // during the drain and the reconnect
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("instance A exited with %d after SIGTERM", code)
	}
	publish(b, 41, 50) // after A is gone
	br.waitFor(`document.querySelectorAll('#events li.event').length >= 50`, "every event after the reconnect")
	br.waitFor(`document.querySelector('#topic-state').textContent === 'open'`, "the topic stream to be open again")
	br.screenshot("-after-drain")

	var log []struct {
		ID, Data, Class string
	}
	// The log shows the newest first.
	br.eval(`[...document.querySelectorAll('#events li')].reverse().map((li) => ({
	    id: li.dataset.id, data: li.querySelector('.data').textContent, class: li.className }))`, &log)
	if len(log) != len(want) {
		t.Fatalf("the page shows %d entries, want %d: %+v", len(log), len(want), log)
	}
	for i, w := range want {
		if log[i].Class != "event" || log[i].ID != w.id || log[i].Data != w.data {
			t.Fatalf("entry %d: %+v, want event %s %q (a gap, a duplicate or an sse-gap)", i, log[i], w.id, w.data)
		}
	}
	// The topic stream is on B (its events came after A exited); the clock
	// stream reconnects on its own schedule (retry jitter), so wait for it,
	// bounded.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := b.metric(`sse_connections_total{result="accepted"}`)
		if got >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance B accepted %v streams, want the page's two (clock and topic)", got)
		}
	}
	if !strings.Contains(a.logText(), `"msg":"stopped"`) {
		t.Fatalf("instance A did not log a clean stop:\n%s", a.logText())
	}
}
