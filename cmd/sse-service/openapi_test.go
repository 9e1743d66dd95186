package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-service/sse-service/api"
	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/httpapi"
	"github.com/sse-service/sse-service/internal/metrics"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/web"
)

// openAPIFile is api/openapi.yaml, seen from this package's directory
// (where go test runs the tests).
const openAPIFile = "../../api/openapi.yaml"

// loadOpenAPI loads and validates api/openapi.yaml.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIFile, err)
	}
	return doc
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	file, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := loadOpenAPI(t)
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi = %q, want 3.1", doc.OpenAPI)
	}

	// The running service serves exactly this file.
	s := startService(t, nil)
	resp, err := http.Get(s.public + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	served, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET /openapi.yaml = %d %q, want 200 application/yaml", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(served, file) {
		t.Fatalf("GET /openapi.yaml (%d bytes) differs from %s (%d bytes)", len(served), openAPIFile, len(file))
	}
}

// oaEchoRoutes builds the public server as run does (httpapi.NewServer) and
// returns Echo's routes: run does not expose its Echo instance.
func oaEchoRoutes(t *testing.T) []*echo.Route {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	m := metrics.New(prometheus.NewRegistry())
	broker := memory.New(memory.Options{})
	t.Cleanup(func() { broker.Close() })
	hub := stream.NewHub(broker, m, log, stream.Options{})
	static, err := fs.Sub(web.Static, "static")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(hub, m, log, httpapi.Options{
		PublishTokens: []string{testToken},
		MaxTopics:     32,
		Static:        static,
		OpenAPI:       api.OpenAPI,
	})
	e, ok := srv.Handler().(*echo.Echo)
	if !ok {
		t.Fatalf("Handler() is a %T, want *echo.Echo", srv.Handler())
	}
	return e.Routes()
}

// specPathsOfEchoRoute maps an Echo route path to the OpenAPI path(s) that
// document it:
//   - a ":name" segment is the path parameter "{name}"
//     (/v1/topics/:topic/events -> /v1/topics/{topic}/events);
//   - the catch-all "/*" (GET, the demo page and its files) is documented
//     as two paths: "/" (the page, index.html) and "/{asset}" (app.js,
//     style.css). Any other wildcard has no mapping and fails the test, so
//     a new one gets documented here and in the spec.
func specPathsOfEchoRoute(t *testing.T, p string) []string {
	t.Helper()
	if p == "/*" {
		return []string{"/", "/{asset}"}
	}
	if strings.Contains(p, "*") {
		t.Errorf("Echo route %q has a wildcard with no mapping to the OpenAPI document", p)
		return nil
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segs[i] = "{" + name + "}"
		}
	}
	return []string{strings.Join(segs, "/")}
}

func TestRoutesMatchTheOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	inSpec := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inSpec[method+" "+path] = true
		}
	}
	inEcho := map[string]bool{}
	for _, r := range oaEchoRoutes(t) {
		for _, p := range specPathsOfEchoRoute(t, r.Path) {
			inEcho[r.Method+" "+p] = true
		}
	}
	if len(inEcho) == 0 {
		t.Fatal("Echo has no routes")
	}
	var onlyEcho, onlySpec []string
	for k := range inEcho {
		if !inSpec[k] {
			onlyEcho = append(onlyEcho, k)
		}
	}
	for k := range inSpec {
		if !inEcho[k] {
			onlySpec = append(onlySpec, k)
		}
	}
	slices.Sort(onlyEcho)
	slices.Sort(onlySpec)
	if len(onlyEcho) > 0 {
		t.Errorf("routes served but not in api/openapi.yaml: %v", onlyEcho)
	}
	if len(onlySpec) > 0 {
		t.Errorf("operations in api/openapi.yaml that the service does not route: %v", onlySpec)
	}
}

// oaBearerAuth accepts the document's only security scheme, an HTTP bearer
// token, when the request carries one (whether the token is right is the
// service's business: a wrong token is a well-formed request answered 401).
func oaBearerAuth(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	ss := in.SecurityScheme
	r := in.RequestValidationInput.Request
	if ss != nil && ss.Type == "apiKey" {
		switch ss.In {
		case "cookie":
			if ck, err := r.Cookie(ss.Name); err == nil && ck.Value != "" {
				return nil
			}
		case "query":
			if r.URL.Query().Get(ss.Name) != "" {
				return nil
			}
		}
		return fmt.Errorf("no %s %s", ss.In, ss.Name)
	}
	if ss == nil || ss.Type != "http" || !strings.EqualFold(ss.Scheme, "bearer") {
		return fmt.Errorf("unexpected security scheme %q", in.SecuritySchemeName)
	}
	h := in.RequestValidationInput.Request.Header.Get("Authorization")
	if scheme, tok, ok := strings.Cut(h, " "); !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// oaConformance checks real exchanges with one running service against the
// document.
type oaConformance struct {
	t      *testing.T
	s      *service
	doc    *openapi3.T
	router routers.Router
	client *http.Client
	// pending holds an event read with a first frame that had no
	// position (the comment then starts the next event's block).
	pending map[*sseClient]oaFrame
}

func newOAConformance(t *testing.T, s *service) *oaConformance {
	t.Helper()
	doc := loadOpenAPI(t)
	// Route requests to this service rather than the documented local URL.
	doc.Servers = openapi3.Servers{{URL: s.public}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(client.CloseIdleConnections)
	return &oaConformance{t: t, s: s, doc: doc, router: router, client: client}
}

// oaExchange is one request and the answer the service must give.
type oaExchange struct {
	name   string
	method string
	path   string
	header map[string]string
	body   string
	// invalid: the request breaks the document (the service refuses it
	// too, with the status below); the test checks that the document says so.
	invalid bool
	// routeAs is a path to route the request as, for the answers the
	// document puts on an operation whose path does not match the request
	// (405 on an unencoded "/" in the topic). The request itself is then
	// not validated.
	routeAs string
	status  int
}

func (c *oaConformance) newRequest(method, path string, header map[string]string, body string) *http.Request {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.s.public+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req
}

// validateRequest routes req through the document and validates it; it
// returns the input that response validation needs.
func (c *oaConformance) validateRequest(x oaExchange) *openapi3filter.RequestValidationInput {
	c.t.Helper()
	req := c.newRequest(x.method, x.path, x.header, x.body)
	routeReq := req
	if x.routeAs != "" {
		routeReq = c.newRequest(x.method, x.routeAs, x.header, x.body)
	}
	route, params, err := c.router.FindRoute(routeReq)
	if err != nil {
		c.t.Fatalf("%s: %s %s has no operation in the document: %v", x.name, x.method, routeReq.URL.Path, err)
	}
	// The gorillamux router matches the encoded path (UseEncodedPath), so a
	// path parameter comes back still percent-encoded ("orders%2F42"); its
	// value, as the document describes it, is the decoded one.
	for k, v := range params {
		if dec, err := url.PathUnescape(v); err == nil {
			params[k] = dec
		}
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    routeReq,
		PathParams: params,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: oaBearerAuth, MultiError: true},
	}
	if x.routeAs != "" {
		return in
	}
	err = openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case x.invalid && err == nil:
		c.t.Errorf("%s: the document accepts %s %s, which the service refuses with %d", x.name, x.method, x.path, x.status)
	case !x.invalid && err != nil:
		c.t.Errorf("%s: request does not conform to the document: %v", x.name, err)
	}
	return in
}

// do validates the request, sends it and validates the whole answer. It
// returns the answer's body.
func (c *oaConformance) do(x oaExchange) string {
	c.t.Helper()
	in := c.validateRequest(x)
	resp, err := c.client.Do(c.newRequest(x.method, x.path, x.header, x.body))
	if err != nil {
		c.t.Fatalf("%s: %s %s: %v", x.name, x.method, x.path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatalf("%s: read body: %v", x.name, err)
	}
	if resp.StatusCode != x.status {
		c.t.Errorf("%s: %s %s = %d %s, want %d", x.name, x.method, x.path, resp.StatusCode, body, x.status)
	}
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	})
	if err != nil {
		c.t.Errorf("%s: answer %d (%s) does not conform to the document: %v", x.name, resp.StatusCode, oaTruncate(body), err)
	}
	return string(body)
}

func oaTruncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// publish sends one conforming publish and returns the event's id.
func (c *oaConformance) publish(topic, body string) string {
	c.t.Helper()
	out := c.do(oaExchange{name: "publish to " + topic, method: http.MethodPost, path: "/v1/topics/" + topic + "/events",
		header: oaJSONAuth, body: body, status: http.StatusCreated})
	var r struct{ ID string }
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.ID == "" {
		c.t.Fatalf("publish answer %q: %v", out, err)
	}
	return r.ID
}

var oaJSONAuth = map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testToken}

func oaWithHeader(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// openStream validates a subscribe request, opens it and checks the head of
// the 200 answer against the document. ValidateResponse is not used here:
// with a schema on the media type it reads the whole, endless body.
func (c *oaConformance) openStream(path string, headers ...string) *sseClient {
	c.t.Helper()
	h := map[string]string{"Accept": "text/event-stream"}
	for _, kv := range headers {
		k, v, _ := strings.Cut(kv, ": ")
		h[k] = v
	}
	in := c.validateRequest(oaExchange{name: "subscribe " + path, method: http.MethodGet, path: path, header: h, status: http.StatusOK})
	sc := c.s.subscribe(path, headers...)
	if sc.code != http.StatusOK {
		c.t.Fatalf("GET %s = %d, want 200", path, sc.code)
	}
	ok := in.Route.Operation.Responses.Status(http.StatusOK)
	if ok == nil {
		c.t.Fatal("the document has no 200 answer for subscribe")
	}
	ct, _, err := mime.ParseMediaType(sc.head.Get("Content-Type"))
	if err != nil || ct != "text/event-stream" {
		c.t.Errorf("Content-Type = %q, want text/event-stream", sc.head.Get("Content-Type"))
	}
	if ok.Value.Content.Get(ct) == nil {
		c.t.Errorf("the document's 200 answer has no %s content", ct)
	}
	for name, hdr := range ok.Value.Headers {
		v := sc.head.Get(name)
		if v == "" {
			if hdr.Value.Required {
				c.t.Errorf("stream answer lacks the documented header %s", name)
			}
			continue
		}
		if err := hdr.Value.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			c.t.Errorf("stream header %s: %q does not match the document: %v", name, v, err)
		}
	}
	return sc
}

// oaFrame is one frame of the stream: its lines, without the blank line.
type oaFrame []string

// oaReadFrame reads the next frame with a minimal Server-Sent Events parser.
func oaReadFrame(c *sseClient, timeout time.Duration) (oaFrame, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var f oaFrame
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if f == nil {
				continue
			}
			return f, nil
		}
		f = append(f, line)
	}
}

// field splits a line into its field name and value as EventSource does
// ("" for a comment line).
func oaField(line string) (name, value string) {
	name, value, _ = strings.Cut(line, ":")
	return name, strings.TrimPrefix(value, " ")
}

// checkFirstFrame checks the frame that opens every stream: a retry field
// and a comment, nothing else.
func (c *oaConformance) checkFirstFrame(sc *sseClient) {
	c.t.Helper()
	f, err := oaReadFrame(sc, 10*time.Second)
	if err != nil {
		c.t.Fatalf("first frame: %v", err)
	}
	var retry, comment bool
	i := 0
	for ; i < len(f); i++ {
		name, v := oaField(f[i])
		if name != "retry" && name != "" {
			break
		}
		if name == "" {
			comment = true
			continue
		}
		var ms int
		if _, err := fmt.Sscanf(v, "%d", &ms); err != nil || ms <= 0 || fmt.Sprint(ms) != v {
			c.t.Errorf("first frame: retry %q is not a number of milliseconds", v)
		}
		retry = true
	}
	if !retry || !comment {
		c.t.Errorf("first frame %q: want a retry field and a comment", f)
	}
	rest := f[i:]
	if len(rest) == 0 {
		return
	}
	if !slices.Contains(rest, "event: sse-position") {
		// No position (an id the stream cannot echo): the event after the
		// comment is the next one.
		if c.pending == nil {
			c.pending = map[*sseClient]oaFrame{}
		}
		c.pending[sc] = rest
		return
	}
	var id string
	var data []string
	for _, l := range rest {
		switch name, v := oaField(l); name {
		case "id":
			id = v
		case "event":
		case "data":
			data = append(data, v)
		default:
			c.t.Errorf("sse-position event has field %q: %q", name, f)
		}
	}
	var pos any
	if len(data) != 1 || json.Unmarshal([]byte(data[0]), &pos) != nil {
		c.t.Fatalf("sse-position data %q: want one line of JSON", data)
	}
	if err := c.schema("PositionEventData").VisitJSON(pos, openapi3.EnableJSONSchema2020()); err != nil {
		c.t.Errorf("sse-position data %q does not match PositionEventData: %v", data[0], err)
	}
	if m, _ := pos.(map[string]any); id == "" || m["lastEventId"] != id {
		c.t.Errorf("sse-position %q: want its id and data.lastEventId equal", f)
	}
}

// nextEvent reads frames until an event (comment-only frames, heartbeats,
// are skipped), checks its wire form and validates it as an SseEvent, and
// an sse-gap's data as GapEventData.
func (c *oaConformance) nextEvent(sc *sseClient) event {
	c.t.Helper()
	for {
		f, ok := c.pending[sc]
		delete(c.pending, sc)
		if !ok {
			var err error
			if f, err = oaReadFrame(sc, 10*time.Second); err != nil {
				c.t.Fatalf("read event: %v", err)
			}
		}
		var ev event
		var data []string
		var hasID, hasEvent bool
		retry := ""
		for i, l := range f {
			name, v := oaField(l)
			switch name {
			case "":
			case "id":
				if i != 0 {
					c.t.Errorf("frame %q: id is not the first line", f)
				}
				ev.ID, hasID = v, true
			case "event":
				if len(data) > 0 {
					c.t.Errorf("frame %q: event after data", f)
				}
				ev.Type, hasEvent = v, true
			case "data":
				data = append(data, v)
			case "retry":
				retry = v
			default:
				c.t.Errorf("frame %q: unexpected field %q", f, name)
			}
		}
		if !hasID && !hasEvent && data == nil {
			continue // a comment frame: heartbeat
		}
		ev.Data = strings.Join(data, "\n")
		if hasEvent && ev.Type == "message" {
			c.t.Errorf("frame %q: event: message should be omitted", f)
		}
		typ := ev.Type
		if typ == "" {
			typ = "message"
		}
		obj := map[string]any{"data": ev.Data, "event": typ}
		if hasID {
			obj["id"] = ev.ID
		}
		if err := c.schema("SseEvent").VisitJSON(obj, openapi3.EnableJSONSchema2020()); err != nil {
			c.t.Errorf("event %q does not match SseEvent: %v", f, err)
		}
		if typ == "sse-auth-expired" {
			var info any
			if err := json.Unmarshal([]byte(ev.Data), &info); err != nil {
				c.t.Errorf("sse-auth-expired data %q is not JSON: %v", ev.Data, err)
			} else if err := c.schema("AuthExpiredEventData").VisitJSON(info, openapi3.EnableJSONSchema2020()); err != nil {
				c.t.Errorf("sse-auth-expired data %q does not match AuthExpiredEventData: %v", ev.Data, err)
			}
		}
		if retry != "" && typ != "sse-reconnect" {
			c.t.Errorf("frame %q: a retry field in an event other than sse-reconnect", f)
		}
		if typ == "sse-reconnect" {
			var rc struct {
				RetryMs int `json:"retryMs"`
			}
			var info any
			if err := json.Unmarshal([]byte(ev.Data), &info); err != nil {
				c.t.Errorf("sse-reconnect data %q is not JSON: %v", ev.Data, err)
			} else if err := c.schema("ReconnectEventData").VisitJSON(info, openapi3.EnableJSONSchema2020()); err != nil {
				c.t.Errorf("sse-reconnect data %q does not match ReconnectEventData: %v", ev.Data, err)
			} else if _ = json.Unmarshal([]byte(ev.Data), &rc); strconv.Itoa(rc.RetryMs) != retry {
				c.t.Errorf("sse-reconnect frame %q: retryMs is not the retry field", f)
			}
		}
		if typ == "sse-gap" {
			var gap any
			if err := json.Unmarshal([]byte(ev.Data), &gap); err != nil {
				c.t.Errorf("sse-gap data %q is not JSON: %v", ev.Data, err)
			} else if err := c.schema("GapEventData").VisitJSON(gap, openapi3.EnableJSONSchema2020()); err != nil {
				c.t.Errorf("sse-gap data %q does not match GapEventData: %v", ev.Data, err)
			}
		}
		return ev
	}
}

func (c *oaConformance) schema(name string) *openapi3.Schema {
	c.t.Helper()
	ref := c.doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		c.t.Fatalf("the document has no schema %s", name)
	}
	return ref.Value
}

func oaRegisterTextDecoders(t *testing.T) {
	// kin-openapi decodes only the media types it knows; the demo page's
	// files are text, checked as strings.
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
		t.Cleanup(func() { openapi3filter.UnregisterBodyDecoder(ct) })
	}
}

func TestRealTrafficConformsToTheOpenAPIDocument(t *testing.T) {
	oaRegisterTextDecoders(t)

	t.Run("stream", func(t *testing.T) {
		s := startService(t, nil)
		c := newOAConformance(t, s)

		live := c.openStream("/v1/events?topic=oa-live&topic=oa%2Fother")
		c.checkFirstFrame(live)
		id1 := c.publish("oa-live", `{"event":"greeting","data":"hello\nworld"}`)
		id2 := c.publish("oa%2Fother", `{"data":{"a":1,"b":[1,2]}}`)
		id3 := c.publish("oa-live", `{"event":"message","data":"plain"}`)
		want := []event{{id1, "greeting", "hello\nworld"}, {id2, "", `{"a":1,"b":[1,2]}`}, {id3, "", "plain"}}
		for _, w := range want {
			if got := c.nextEvent(live); got != w {
				t.Errorf("event = %+v, want %+v", got, w)
			}
		}

		for _, resume := range []struct{ path, header string }{
			{"/v1/events?topic=oa-live", "Last-Event-ID: " + id1},
			{"/v1/events?topic=oa-live&lastEventId=" + id1, ""},
		} {
			var hs []string
			if resume.header != "" {
				hs = append(hs, resume.header)
			}
			r := c.openStream(resume.path, hs...)
			c.checkFirstFrame(r)
			if got := c.nextEvent(r); got != want[2] {
				t.Errorf("resumed %s %s: event = %+v, want %+v", resume.path, resume.header, got, want[2])
			}
		}

		for _, gap := range []struct{ after, reason string }{
			{"abc-5", "unknown-stream"},
			{"not an id", "malformed-id"},
			{strings.TrimSuffix(id3, "3") + "99999", "unknown-id"},
		} {
			g := c.openStream("/v1/events?topic=oa-live", "Last-Event-ID: "+gap.after)
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
		s := startService(t, nil)
		c := newOAConformance(t, s)
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
		s := startService(t, map[string]string{
			"SSE_PRIVATE_TOPICS": "user:*",
			"SSE_JWT_SECRET":     secret,
			"SSE_CORS_ORIGINS":   "https://app.example",
		})
		c := newOAConformance(t, s)
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
			header []string
		}{
			{"/v1/events?topic=user:alice", []string{"Authorization: Bearer " + alice}},
			{"/v1/events?topic=user:alice", []string{"Cookie: sse_token=" + alice, "Origin: https://app.example"}},
			{"/v1/events?topic=user:alice&access_token=" + alice, nil},
		} {
			sc := c.openStream(how.path, how.header...)
			c.checkFirstFrame(sc)
		}
		soon := time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
		sc := c.openStream("/v1/events?topic=user:alice", "Authorization: Bearer "+mint(soon, map[string]any{"subscribe": []string{"user:*"}}))
		c.checkFirstFrame(sc)
		if ev := c.nextEvent(sc); ev.Type != "sse-auth-expired" || ev.ID != "" {
			t.Errorf("at expiry: %+v, want sse-auth-expired without an id", ev)
		}
	})

	t.Run("per-IP limit", func(t *testing.T) {
		s := startService(t, map[string]string{"SSE_MAX_CONNECTIONS_PER_IP": "1"})
		c := newOAConformance(t, s)
		held := c.openStream("/v1/events?topic=t")
		c.checkFirstFrame(held)
		c.do(oaExchange{name: "second stream from one IP", method: http.MethodGet, path: "/v1/events?topic=t", status: http.StatusTooManyRequests})
	})

	t.Run("global limit", func(t *testing.T) {
		s := startService(t, map[string]string{"SSE_MAX_CONNECTIONS": "1"})
		c := newOAConformance(t, s)
		held := c.openStream("/v1/events?topic=t")
		c.checkFirstFrame(held)
		c.do(oaExchange{name: "stream over the global limit", method: http.MethodGet, path: "/v1/events?topic=t", status: http.StatusServiceUnavailable})
		// The same refusal to an EventSource: a 200 stream that says when
		// to come back.
		refused := c.openStream("/v1/events?topic=t")
		if ev := c.nextEvent(refused); ev.Type != "sse-reconnect" || ev.ID != "" {
			t.Errorf("refused EventSource got %+v, want one sse-reconnect without an id", ev)
		}
	})

	t.Run("publish", func(t *testing.T) {
		s := startService(t, nil)
		c := newOAConformance(t, s)
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
		s := startService(t, nil)
		c := newOAConformance(t, s)
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
		s := startService(t, nil)
		c := newOAConformance(t, s)
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
