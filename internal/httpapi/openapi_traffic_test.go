package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// oaEvent is what a test expects of an event.
type oaEvent struct{ ID, Type, Data string }

func oaEventOf(ev ssetest.Event) oaEvent { return oaEvent{ev.ID, ev.Type, ev.Data} }

func TestRealTrafficConformsToTheOpenAPIDocument(t *testing.T) {
	oaRegisterTextDecoders(t)

	t.Run("stream", func(t *testing.T) {
		c := newOAConformance(t, nil)

		live := c.openStream("/v1/events?topic=oa-live&topic=oa%2Fother", nil)
		c.checkFirstFrame(live)
		id1 := c.publish("oa-live", `{"event":"greeting","data":"hello\nworld"}`)
		id2 := c.publish("oa%2Fother", `{"data":{"a":1,"b":[1,2]}}`)
		id3 := c.publish("oa-live", `{"event":"message","data":"plain"}`)
		want := []oaEvent{{id1, "greeting", "hello\nworld"}, {id2, "message", `{"a":1,"b":[1,2]}`}, {id3, "message", "plain"}}
		for _, w := range want {
			if got := c.nextEvent(live); oaEventOf(got) != w {
				t.Errorf("event = %+v, want %+v", got, w)
			}
		}

		for _, resume := range []struct {
			path   string
			header map[string]string
		}{
			{"/v1/events?topic=oa-live", map[string]string{"Last-Event-ID": id1}},
			{"/v1/events?topic=oa-live&lastEventId=" + id1, nil},
		} {
			r := c.openStream(resume.path, resume.header)
			c.checkFirstFrame(r)
			if got := c.nextEvent(r); oaEventOf(got) != want[2] {
				t.Errorf("resumed %s %v: event = %+v, want %+v", resume.path, resume.header, got, want[2])
			}
		}

		for _, gap := range []struct{ after, reason string }{
			{"abc-5", "unknown-stream"},
			{"not an id", "malformed-id"},
			{strings.TrimSuffix(id3, "3") + "99999", "unknown-id"},
		} {
			g := c.openStream("/v1/events?topic=oa-live", map[string]string{"Last-Event-ID": gap.after})
			c.checkFirstFrame(g)
			ev := c.nextEvent(g)
			var data struct{ LastEventID, Reason string }
			json.Unmarshal([]byte(ev.Data), &data)
			if ev.Type != "sse-gap" || ev.ID != id3 || data.LastEventID != gap.after || data.Reason != gap.reason {
				t.Errorf("resume after %q: first event %+v, want sse-gap with id %s, lastEventId %q and reason %s",
					gap.after, ev, id3, gap.after, gap.reason)
			}
		}
	})

	t.Run("subscribe errors", func(t *testing.T) {
		c := newOAConformance(t, nil)
		for _, x := range []oaExchange{
			{name: "missing topic", path: "/v1/events", invalid: true, status: 400},
			{name: "bad topic", path: "/v1/events?topic=a%20b", invalid: true, status: 400},
			{name: "empty topic", path: "/v1/events?topic=", invalid: true, status: 400},
		} {
			x.method = http.MethodGet
			c.do(x)
		}
	})

	t.Run("private topics", func(t *testing.T) {
		const secret = "oa-jwt-secret-of-at-least-32-bytes!!"
		c := newOAConformance(t, func(o *Options) {
			o.Verifier = newTestVerifier(t, auth.Config{Secret: []byte(secret)})
			o.PrivateTopics = mustPatterns(t, "user:*")
			o.CORSOrigins = []string{"https://app.example"}
		})
		mint := func(exp time.Time, claim map[string]any) string {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": exp.Unix(), "sse": claim}).SignedString([]byte(secret))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		hour := time.Now().Add(time.Hour)
		alice := mint(hour, map[string]any{"subscribe": []string{"user:alice"}, "publish": []string{"user:alice"}})
		expired := mint(time.Now().Add(-time.Minute), map[string]any{"subscribe": []string{"user:*"}})
		bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
		jsonBearer := func(tok string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
		}
		for _, x := range []oaExchange{
			{name: "private topic without a token", method: http.MethodGet, path: "/v1/events?topic=user:alice", status: 401},
			{name: "expired token", method: http.MethodGet, path: "/v1/events?topic=user:alice", header: bearer(expired), status: 401},
			{name: "malformed token", method: http.MethodGet, path: "/v1/events?topic=user:alice", header: bearer("not.a.jwt"), status: 401},
			{name: "topic not in the claim", method: http.MethodGet, path: "/v1/events?topic=user:alice&topic=user:bob", header: bearer(alice), status: 403},
			{name: "query token, topic not in the claim", method: http.MethodGet, path: "/v1/events?topic=user:bob&access_token=" + alice, status: 403},
			{name: "JWT publisher", method: http.MethodPost, path: "/v1/topics/user:alice/events", header: jsonBearer(alice), body: `{"data":"x"}`, status: 201},
			{name: "JWT publisher, other topic", method: http.MethodPost, path: "/v1/topics/user:bob/events", header: jsonBearer(alice), body: `{"data":"x"}`, status: 403},
			{name: "JWT publisher, batch with another topic", method: http.MethodPost, path: "/v1/events", header: jsonBearer(alice), body: `[{"topic":"user:alice","data":1},{"topic":"user:bob","data":2}]`, status: 403},
			{name: "expired JWT publisher", method: http.MethodPost, path: "/v1/topics/user:alice/events", header: jsonBearer(expired), body: `{"data":"x"}`, status: 401},
		} {
			c.do(x)
		}

		for _, how := range []struct {
			path   string
			header map[string]string
		}{
			{"/v1/events?topic=user:alice", bearer(alice)},
			{"/v1/events?topic=user:alice", map[string]string{"Cookie": "sse_token=" + alice, "Origin": "https://app.example"}},
			{"/v1/events?topic=user:alice&access_token=" + alice, nil},
		} {
			sc := c.openStream(how.path, how.header)
			c.checkFirstFrame(sc)
		}
		soon := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
		sc := c.openStream("/v1/events?topic=user:alice", bearer(mint(soon, map[string]any{"subscribe": []string{"user:*"}})))
		c.checkFirstFrame(sc)
		if ev := c.nextEvent(sc); ev.Type != "sse-auth-expired" || ev.ID != "" {
			t.Errorf("at expiry: %+v, want sse-auth-expired without an id", ev)
		}
	})

	t.Run("per-IP limit", func(t *testing.T) {
		c := newOAConformance(t, func(o *Options) { o.MaxConnsPerIP = 1 })
		held := c.openStream("/v1/events?topic=t", nil)
		c.checkFirstFrame(held)
		c.do(oaExchange{name: "second stream from one IP", method: http.MethodGet, path: "/v1/events?topic=t", status: http.StatusTooManyRequests})
	})

	t.Run("global limit", func(t *testing.T) {
		c := newOAConformance(t, func(o *Options) { o.MaxConnections = 1 })
		held := c.openStream("/v1/events?topic=t", nil)
		c.checkFirstFrame(held)
		c.do(oaExchange{name: "stream over the global limit", method: http.MethodGet, path: "/v1/events?topic=t", status: http.StatusServiceUnavailable})
		// The same refusal to an EventSource: a 200 stream that says when
		// to come back.
		refused := c.openStream("/v1/events?topic=t", nil)
		if ev := c.nextEvent(refused); ev.Type != "sse-reconnect" || ev.ID != "" {
			t.Errorf("refused EventSource got %+v, want one sse-reconnect without an id", ev)
		}
	})

	t.Run("publish", func(t *testing.T) {
		c := newOAConformance(t, nil)
		pub := "/v1/topics/oa-pub/events"
		big := `{"data":"` + strings.Repeat("x", 70000) + `"}`
		var items []string
		for i := range 1001 {
			items = append(items, fmt.Sprintf(`{"topic":"oa-pub","data":%d}`, i))
		}
		tooMany := "[" + strings.Join(items, ",") + "]"
		batch := `[{"topic":"oa-pub","data":"a"},{"topic":"orders/42","event":"created","data":{"id":42}}]`
		key := oaWithHeader(oaJSONAuth, "Idempotency-Key", "oa-key-1")
		for _, x := range []oaExchange{
			{name: "publish", path: pub, header: oaJSONAuth, body: `{"event":"greeting","data":"hello"}`, status: 201},
			{name: "publish, encoded slash", path: "/v1/topics/orders%2F42/events", header: oaJSONAuth, body: `{"data":{"orderId":42}}`, status: 201},
			{name: "publish, charset", path: pub, header: oaWithHeader(oaJSONAuth, "Content-Type", "application/json; charset=utf-8"), body: `{"data":null}`, status: 201},
			{name: "invalid JSON", path: pub, header: oaJSONAuth, body: `{"data":`, invalid: true, status: 400},
			{name: "unknown field", path: pub, header: oaJSONAuth, body: `{"data":"x","x":1}`, invalid: true, status: 400},
			{name: "no data", path: pub, header: oaJSONAuth, body: `{"event":"e"}`, invalid: true, status: 400},
			{name: "reserved event type", path: pub, header: oaJSONAuth, body: `{"event":"sse-x","data":"x"}`, invalid: true, status: 400},
			{name: "event type with LF", path: pub, header: oaJSONAuth, body: `{"event":"a\nb","data":"x"}`, invalid: true, status: 400},
			{name: "invalid topic", path: "/v1/topics/a%20b/events", header: oaJSONAuth, body: `{"data":"x"}`, invalid: true, status: 400},
			{name: "Idempotency-Key too long", path: pub, header: oaWithHeader(oaJSONAuth, "Idempotency-Key", strings.Repeat("k", 201)), body: `{"data":"x"}`, invalid: true, status: 400},
			{name: "no token", path: pub, header: map[string]string{"Content-Type": "application/json"}, body: `{"data":"x"}`, invalid: true, status: 401},
			{name: "wrong token", path: pub, header: oaWithHeader(oaJSONAuth, "Authorization", "Bearer wrong-token-0123456789"), body: `{"data":"x"}`, status: 401},
			{name: "too large", path: pub, header: oaJSONAuth, body: big, status: 413},
			{name: "wrong content type", path: pub, header: oaWithHeader(oaJSONAuth, "Content-Type", "text/plain"), body: `{"data":"x"}`, invalid: true, status: 415},
			{name: "unencoded slash in topic", path: "/v1/topics/orders/42/events", routeAs: "/v1/topics/orders%2F42/events", header: oaJSONAuth, body: `{"data":"x"}`, status: 405},
			{name: "batch", path: "/v1/events", header: oaJSONAuth, body: batch, status: 201},
			{name: "batch, empty", path: "/v1/events", header: oaJSONAuth, body: `[]`, invalid: true, status: 400},
			{name: "batch, not an array", path: "/v1/events", header: oaJSONAuth, body: `{"topic":"a","data":"x"}`, invalid: true, status: 400},
			{name: "batch, bad topic", path: "/v1/events", header: oaJSONAuth, body: `[{"topic":"ok","data":1},{"topic":"a b","data":2}]`, invalid: true, status: 400},
			{name: "batch, too many events", path: "/v1/events", header: oaJSONAuth, body: tooMany, invalid: true, status: 413},
			{name: "batch, no token", path: "/v1/events", header: map[string]string{"Content-Type": "application/json"}, body: batch, invalid: true, status: 401},
		} {
			x.method = http.MethodPost
			c.do(x)
		}

		// Idempotent repeats answer 201 with the first ids.
		for _, p := range []struct{ path, body string }{
			{pub, `{"data":"once"}`},
			{"/v1/events", batch},
		} {
			var answers []string
			for range 2 {
				answers = append(answers, c.do(oaExchange{name: "idempotent " + p.path, method: http.MethodPost, path: p.path, header: key, body: p.body, status: 201}))
			}
			if answers[0] != answers[1] {
				t.Errorf("repeat with Idempotency-Key on %s = %s, first %s", p.path, answers[1], answers[0])
			}
		}
	})

	// The document's description (not its paths) promises: 405 with an
	// Allow header and a JSON Error for a method a path does not support
	// (HEAD included), and 204 with Allow for OPTIONS.
	t.Run("methods", func(t *testing.T) {
		c := newOAConformance(t, nil)
		for _, m := range []struct {
			method, path string
			status       int
		}{
			{http.MethodPut, "/v1/events", 405},
			{http.MethodDelete, "/v1/topics/a/events", 405},
			{http.MethodHead, "/", 405},
			{http.MethodHead, "/v1/events?topic=a", 405},
			{http.MethodOptions, "/v1/events", 204},
			{http.MethodOptions, "/v1/topics/a/events", 204},
		} {
			resp, err := c.client.Do(c.newRequest(m.method, m.path, nil, ""))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != m.status || resp.Header.Get("Allow") == "" {
				t.Errorf("%s %s = %d, Allow %q; want %d with Allow", m.method, m.path, resp.StatusCode, resp.Header.Get("Allow"), m.status)
			}
			if m.status != 405 {
				continue
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("%s %s: Cache-Control %q, want no-store", m.method, m.path, cc)
			}
			if m.method == http.MethodHead {
				continue // no body
			}
			var v any
			if err := json.Unmarshal(body, &v); err != nil {
				t.Errorf("%s %s: body %q is not JSON", m.method, m.path, body)
			} else if err := c.schema("Error").VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
				t.Errorf("%s %s: body %s does not match Error: %v", m.method, m.path, body, err)
			}
		}
	})

	t.Run("documents and demo page", func(t *testing.T) {
		c := newOAConformance(t, nil)
		for _, x := range []oaExchange{
			{name: "openapi", path: "/openapi.yaml", status: 200},
			{name: "demo page", path: "/", status: 200},
			{name: "script", path: "/app.js", status: 200},
			{name: "style sheet", path: "/style.css", status: 200},
			{name: "index.html", path: "/index.html", status: 301},
			{name: "unknown asset", path: "/nope.txt", status: 404},
			{name: "admin path", path: "/metrics", status: 404},
		} {
			x.method = http.MethodGet
			c.do(x)
		}
	})
}
