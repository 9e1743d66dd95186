package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/sse-service/sse-service/internal/stream"
)

// publishBody is the body of POST /v1/topics/{topic}/events.
type publishBody struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// batchItem is one element of the body of POST /v1/events.
type batchItem struct {
	Topic string          `json:"topic"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// handlePublish serves POST /v1/topics/{topic}/events.
func (s *server) handlePublish() echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		claims, err := s.publisher(r)
		if err != nil {
			return err
		}
		topic, err := url.PathUnescape(c.Param("topic"))
		if err != nil {
			return newError(http.StatusBadRequest, "invalid topic: bad percent-encoding")
		}
		if err := stream.ValidateTopic(topic); err != nil {
			return err
		}
		if err := mayPublish(claims, topic); err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		var body publishBody
		if err := readJSON(c, s.opts.MaxEventBytes, &body); err != nil {
			return err
		}
		data, err := payload(body.Data)
		if err != nil {
			return err
		}
		ids, err := s.hub.Publish(r.Context(), []stream.Message{{
			Topic: topic, Type: body.Event, Data: data, IdempotencyKey: key,
		}})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, map[string]string{"id": ids[0]})
	}
}

// handleBatch serves POST /v1/events: every event is validated before any
// is published, and the ids come back in order.
func (s *server) handleBatch() echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		claims, err := s.publisher(r)
		if err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		var items []batchItem
		if err := readJSON(c, s.opts.MaxBatchBytes, &items); err != nil {
			return err
		}
		switch {
		case len(items) == 0:
			return newError(http.StatusBadRequest, "empty batch: send an array of {topic, event, data}")
		case len(items) > s.opts.MaxBatchEvents:
			return newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of %d events: at most %d", len(items), s.opts.MaxBatchEvents))
		}
		msgs := make([]stream.Message, len(items))
		for i, it := range items {
			data, err := payload(it.Data)
			if err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
			if len(data) > s.opts.MaxEventBytes {
				return newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("event %d: data of %d bytes: at most %d", i, len(data), s.opts.MaxEventBytes))
			}
			if err := stream.ValidateTopic(it.Topic); err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
			if err := mayPublish(claims, it.Topic); err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
			msgs[i] = stream.Message{Topic: it.Topic, Type: it.Event, Data: data}
			if key != "" {
				// One key covers the batch; each event gets its own.
				msgs[i].IdempotencyKey = fmt.Sprintf("%s#%d", key, i)
			}
		}
		ids, err := s.hub.Publish(r.Context(), msgs)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, map[string][]string{"ids": ids})
	}
}

// idempotencyKey returns the Idempotency-Key header: 1-200 printable ASCII.
func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		return "", nil
	}
	if len(k) > 200 {
		return "", newError(http.StatusBadRequest, "invalid Idempotency-Key: longer than 200 characters")
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", newError(http.StatusBadRequest, "invalid Idempotency-Key: printable ASCII only")
		}
	}
	return k, nil
}

// readJSON decodes an application/json body of at most limit bytes into v,
// refusing unknown fields and trailing data.
func readJSON(c echo.Context, limit int, v any) error {
	r := c.Request()
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	if r.ContentLength > int64(limit) {
		return tooLarge(limit)
	}
	// The body's deadline was set when the request came (bodyDeadline).
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, int64(limit)))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return tooLarge(limit)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return newError(http.StatusRequestTimeout, "request body not received in time")
		}
		return newError(http.StatusBadRequest, "could not read the request body")
	}
	// JSON text is UTF-8 (RFC 8259); Go's decoder would quietly replace
	// invalid bytes with U+FFFD and deliver something nobody published.
	if !utf8.Valid(b) {
		return newError(http.StatusBadRequest, "invalid JSON body: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return newError(http.StatusBadRequest, "invalid JSON body: "+err.Error())
	}
	if dec.More() {
		return newError(http.StatusBadRequest, "invalid JSON body: data after the JSON value")
	}
	return nil
}

// bodyDeadline gives the body of every request but a stream a deadline,
// and makes every answer to a request with a body it has not read close
// the connection at once: net/http would otherwise read (and wait for) up
// to 256 KiB of the body before writing the answer, so a body that never
// comes would get no answer at all, not even a 401. A chunked body closes the
// connection after the answer too: with a Content-Length beside it (which
// net/http drops before anyone sees it), it may be a smuggling attempt (RFC
// 9112, section 6.3).
func (s *server) bodyDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if isStream(r) || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
			return next(c)
		}
		rc := http.NewResponseController(c.Response())
		_ = rc.SetReadDeadline(time.Now().Add(s.opts.BodyTimeout))
		unread := !isPublish(c) // only the publish routes read a body
		if unread || len(r.TransferEncoding) > 0 {
			c.Response().Header().Set("Connection", "close")
		}
		err := next(c)
		if err != nil || unread {
			// Answered without the rest of the body: close the connection
			// right after the answer, instead of when the body is in.
			c.Response().Header().Set("Connection", "close")
			_ = rc.SetReadDeadline(time.Now())
		}
		return err
	}
}

func tooLarge(limit int) error {
	return newError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: at most %d bytes", limit))
}

// payload turns the data field into the event's text: a JSON string as is,
// any other JSON value as its compact JSON text.
func payload(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", newError(http.StatusBadRequest, `missing "data": send a string or any JSON value`)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", newError(http.StatusBadRequest, "invalid data string: "+err.Error())
		}
		return s, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", newError(http.StatusBadRequest, "invalid data: "+err.Error())
	}
	return buf.String(), nil
}
