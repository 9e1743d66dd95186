package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const jwtSecret = "e2e-jwt-secret-at-least-32-bytes-long!"

// token mints an HS256 JWT for the e2e tests.
func token(t *testing.T, subscribe []string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice",
		"exp": exp.Unix(),
		"sse": map[string]any{"subscribe": subscribe},
	}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// appPage is a page of another origin that follows a private topic of the
// service with EventSource(url, {withCredentials: true}) and the token in a
// cookie, and on sse-auth-expired gets a new token (from the test, through
// window.__renew) and resumes with ?lastEventId=.
const appPage = `<!doctype html><meta charset="utf-8"><title>app</title>
<body><pre id="log"></pre><script>
window.__sse = { events: [], opens: 0, errors: 0, expired: 0 };
window.__open = function (base, lastId) {
  let url = base;
  if (lastId) url += '&lastEventId=' + encodeURIComponent(lastId);
  const es = new EventSource(url, { withCredentials: true });
  window.__es = es;
  es.onopen = () => { window.__sse.opens++; };
  es.onerror = () => { window.__sse.errors++; };
  es.onmessage = (e) => {
    window.__sse.events.push({ type: e.type, id: e.lastEventId, data: e.data });
    document.getElementById('log').textContent += e.lastEventId + ' ' + e.data + '\n';
  };
  es.addEventListener('sse-auth-expired', (e) => {
    window.__sse.expired++;
    window.__sse.expiredData = e.data;
    window.__sse.expiredLastId = e.lastEventId;
    es.close(); // the old cookie would only get a 401 on the browser's own reconnect
  });
};
</script>`

// A page on another origin (same site, as app.example.com and
// sse.example.com are) subscribes to a private topic with the token in a
// cookie, across origins with CORS credentials. The stream ends with
// sse-auth-expired when the token expires; the page renews the cookie and
// resumes from its last id: nothing published meanwhile is lost. A page on
// an origin not in SSE_CORS_ORIGINS gets nothing.
func TestPrivateTopicAcrossOriginsWithCookie(t *testing.T) {
	app := startAppServer(t)
	appOrigin := "http://localhost:" + app.port
	svc := startService(t, "service", map[string]string{
		"SSE_CLOCK_INTERVAL": "0",
		"SSE_PRIVATE_TOPICS": "user:*",
		"SSE_JWT_SECRET":     jwtSecret,
		"SSE_CORS_ORIGINS":   appOrigin,
	})
	svcURL, _ := url.Parse(svc.public)
	stream := "http://localhost:" + svcURL.Port() + "/v1/events?topic=user:alice"

	b := startBrowser(t)
	b.goto_(appOrigin + "/")
	expires := time.Now().Add(4 * time.Second)
	b.eval(`document.cookie = "sse_token=`+token(t, []string{"user:alice"}, expires)+`; path=/"; true`, nil)
	b.eval(`window.__open(`+jsString(stream)+`, ''); true`, nil)
	b.waitFor(`window.__sse.opens === 1`, "the cross-origin stream to open")

	var want []browserEvent
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			data := "private " + strconv.Itoa(i)
			want = append(want, browserEvent{Type: "message", ID: svc.publish("user:alice", data), Data: data})
		}
	}
	publish(1, 5)
	b.waitFor(`window.__sse.events.length >= 5`, "the first events")
	b.waitFor(`window.__sse.expired === 1`, "sse-auth-expired")
	var expired struct {
		Data, LastID string
		Opens        int
	}
	b.eval(`({ data: window.__sse.expiredData, lastId: window.__sse.expiredLastId, opens: window.__sse.opens })`, &expired)
	if !strings.Contains(expired.Data, `"reason":"token expired"`) || expired.LastID != want[4].ID {
		t.Fatalf("sse-auth-expired %+v: want the reason, and the last id still that of the last event (%s)", expired, want[4].ID)
	}
	publish(6, 10) // while the page has no stream
	b.eval(`document.cookie = "sse_token=`+token(t, []string{"user:*"}, time.Now().Add(time.Hour))+`; path=/"; true`, nil)
	b.eval(`window.__open(`+jsString(stream)+`, window.__sse.expiredLastId); true`, nil)
	b.waitFor(`window.__sse.events.length >= 10`, "the events published while the token was renewed")
	got, opens, _ := b.collected()
	if len(got) != len(want) || opens != 2 {
		t.Fatalf("got %d events over %d opens, want %d over 2:\n%s", len(got), opens, len(want), fmtIDs(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := svc.metric(`sse_connections_total{result="accepted"}`); n != 2 {
		t.Errorf("accepted %v streams, want 2", n)
	}

	// The same page served from an origin that is not allowed: the browser
	// refuses the response (no Access-Control-Allow-Origin), the stream
	// never opens and the EventSource gives up.
	b.goto_("http://127.0.0.1:" + app.port + "/")
	b.eval(`document.cookie = "sse_token=`+token(t, []string{"user:*"}, time.Now().Add(time.Hour))+`; path=/"; true`, nil)
	b.eval(`window.__open(`+jsString(strings.Replace(stream, "localhost", "127.0.0.1", 1))+`, ''); true`, nil)
	b.waitFor(`window.__es.readyState === EventSource.CLOSED`, "the browser to refuse the stream")
	if _, opens, _ := b.collected(); opens != 0 {
		t.Fatalf("a page on a foreign origin opened the stream")
	}
}

type appServer struct {
	port string
}

// startAppServer serves appPage on loopback: the "application" origin.
func startAppServer(t *testing.T) *appServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, appPage)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return &appServer{port: port}
}

// The demo page with a private topic: refused without a token, open with
// one (sent as the page's cookie), "expired" with a notice when the token
// expires, and a new token resumes after the last event seen.
func TestDemoPagePrivateTopic(t *testing.T) {
	svc := startService(t, "service", map[string]string{
		"SSE_CLOCK_INTERVAL": "1s",
		"SSE_PRIVATE_TOPICS": "user:*",
		"SSE_JWT_SECRET":     jwtSecret,
	})
	b := startBrowser(t)
	b.goto_(svc.public + "/")
	state := `document.querySelector('#topic-state').textContent`

	b.fill("#topic-input", "user:alice")
	b.click("#subscribe-btn")
	b.waitFor(state+` === 'closed'`, "the browser to give up without a token")

	b.fill("#topic-token", token(t, []string{"user:alice"}, time.Now().Add(3*time.Second)))
	b.click("#subscribe-btn")
	b.waitFor(state+` === 'open'`, "the private stream to open")
	first := svc.publish("user:alice", "for alice only")
	b.waitFor(`document.querySelector('#events li.event')`, "the private event")
	b.waitFor(state+` === 'expired'`, "the token to expire")
	b.waitFor(`document.querySelector('#events li.notice')`, "the expiry notice")
	b.screenshot("-expired")

	missed := svc.publish("user:alice", "published while expired")
	b.fill("#topic-token", token(t, []string{"user:alice"}, time.Now().Add(time.Hour)))
	b.click("#subscribe-btn")
	b.waitFor(state+` === 'open'`, "the stream to open with the new token")
	b.waitFor(`[...document.querySelectorAll('#events li.event')].length >= 2`, "the missed event")
	var ids []string
	b.eval(`[...document.querySelectorAll('#events li.event')].reverse().map((li) => li.dataset.id)`, &ids)
	if len(ids) != 2 || ids[0] != first || ids[1] != missed {
		t.Fatalf("events shown %q, want [%s %s]", ids, first, missed)
	}
	var clock string
	b.eval(`document.querySelector('#clock-state').textContent`, &clock)
	if clock != "open" {
		t.Fatalf("clock state %q: the clock topic must stay public", clock)
	}
	b.screenshot("-resumed")
	if n := svc.metric(`sse_connections_total{result="unauthorized"}`); n != 1 {
		t.Errorf("unauthorized counted %v times, want 1", n)
	}
}
