package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

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

// oaConformance checks real exchanges with one running server against the
// document.
type oaConformance struct {
	t      *testing.T
	ts     *testServer
	doc    *openapi3.T
	router routers.Router
	client *http.Client
	// pending holds an event read with a first frame that had no
	// position (the comment then starts the next event's block).
	pending map[*ssetest.Stream]oaFrame
}

// newOAConformance serves NewServer with asRunOptions, changed by set when
// not nil, and checks exchanges with it.
func newOAConformance(t *testing.T, set func(*Options)) *oaConformance {
	t.Helper()
	opts := asRunOptions(t)
	if set != nil {
		set(&opts)
	}
	ts := startServer(t, opts)
	doc := loadOpenAPI(t)
	// Route requests to this server rather than the documented local URL.
	doc.Servers = openapi3.Servers{{URL: ts.url}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(client.CloseIdleConnections)
	return &oaConformance{t: t, ts: ts, doc: doc, router: router, client: client}
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
	req, err := http.NewRequest(method, c.ts.url+path, rd)
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
