package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// publishTimeout bounds one publish request.
	publishTimeout = 10 * time.Second
	// paceTick is how often the pacer hands out the requests that are due.
	paceTick = 10 * time.Millisecond
	// maxBacklog is how far, in time, the publishers may fall behind
	// schedule and still catch up; requests due beyond it are skipped.
	maxBacklog = 100 * time.Millisecond
)

// publisher sends events at a steady rate from a few lanes. Each lane is
// one goroutine sending one request at a time with its own sequence
// numbers, so the order of a lane's events is the order the service
// accepted them in.
type publisher struct {
	client  *http.Client
	urls    [][]string // urls[topic][target]: the publish endpoint
	token   string
	batch   int
	size    int
	topicJS [][]byte // each topic as a JSON string
	lanes   []*lane

	skipped atomic.Int64 // requests not sent: lanes behind schedule
	wg      sync.WaitGroup
}

// lane is one publisher goroutine and what it counted. Its fields other
// than published are only touched by its goroutine until it has ended.
type lane struct {
	id        int
	topic     int // index of the topic it publishes to
	nextSeq   uint64
	published atomic.Int64 // events accepted by the service
	requests  int64
	errors    map[string]int64
	firstErr  error
	body      []byte
}

func newPublisher(targets []Target, token string, topics []string, batch, size, lanes int) *publisher {
	p := &publisher{
		client: &http.Client{
			Timeout: publishTimeout,
			Transport: &http.Transport{
				DisableCompression:  true,
				MaxIdleConnsPerHost: lanes,
				IdleConnTimeout:     time.Minute,
			},
		},
		token: token,
		batch: batch,
		size:  size,
	}
	for _, topic := range topics {
		js, _ := json.Marshal(topic) // a string always marshals
		p.topicJS = append(p.topicJS, js)
		var urls []string
		for _, t := range targets {
			if batch > 1 {
				urls = append(urls, t.Base+"/v1/events")
			} else {
				urls = append(urls, t.Base+"/v1/topics/"+url.PathEscape(topic)+"/events")
			}
		}
		p.urls = append(p.urls, urls)
	}
	for i := range lanes {
		p.lanes = append(p.lanes, &lane{id: i, topic: i % len(topics), nextSeq: 1, errors: map[string]int64{}})
	}
	return p
}

// start paces publishing at rate events/s until pace is done, then lets the
// requests in flight finish (unless abort is done too); wait returns after
// that. Requests still queued when pace is done are not sent.
func (p *publisher) start(pace, abort context.Context, rate float64) {
	perSec := rate / float64(p.batch)
	backlog := max(2*len(p.lanes), int(math.Ceil(perSec*maxBacklog.Seconds())))
	due := make(chan struct{}, backlog)
	for _, l := range p.lanes {
		p.wg.Go(func() { p.run(pace, abort, l, due) })
	}
	p.wg.Go(func() {
		defer close(due)
		p.pace(pace, perSec, due)
	})
}

// wait waits for the pacer and every lane to end.
func (p *publisher) wait() { p.wg.Wait() }

// pace hands out perSec requests per second on due, on a fixed schedule
// from its start: if lanes fall behind they catch up, but at most the
// channel's capacity of requests is queued; the rest are skipped, counted,
// and the schedule moves on.
func (p *publisher) pace(ctx context.Context, perSec float64, due chan<- struct{}) {
	start := time.Now()
	ticker := time.NewTicker(paceTick)
	defer ticker.Stop()
	var issued int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			target := int64(now.Sub(start).Seconds() * perSec)
			for ; issued < target; issued++ {
				select {
				case due <- struct{}{}:
				default:
					p.skipped.Add(1)
				}
			}
		}
	}
}

// run sends one request for each value on due until pace is done.
func (p *publisher) run(pace, abort context.Context, l *lane, due <-chan struct{}) {
	for range due {
		if pace.Err() != nil {
			return
		}
		p.publish(abort, l)
	}
}

// publish sends the lane's next batch and counts the outcome. Sequence
// numbers advance only when the service accepted the events, so a failed
// publish does not show up as a gap on the streams.
func (p *publisher) publish(ctx context.Context, l *lane) {
	l.body = p.appendBody(l.body[:0], l, time.Now().UnixNano())
	urls := p.urls[l.topic]
	target := urls[(int(l.requests)+l.id)%len(urls)]
	l.requests++
	status, err := p.post(ctx, target, l.body)
	switch {
	case err != nil && ctx.Err() != nil:
		// aborted (interrupt): the outcome is unknown and not an error
	case err != nil:
		l.count("transport error", err)
	case status/100 != 2:
		l.count("status "+strconv.Itoa(status), fmt.Errorf("publish to %s: status %d", target, status))
	default:
		l.nextSeq += uint64(p.batch)
		l.published.Add(int64(p.batch))
	}
}

// count records a failed request.
func (l *lane) count(kind string, err error) {
	l.errors[kind]++
	if l.firstErr == nil {
		l.firstErr = err
	}
}

// post sends one publish request and returns its status.
func (p *publisher) post(ctx context.Context, target string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	return resp.StatusCode, nil
}

// appendBody appends the JSON body of the lane's next request, stamped ts.
// The payload is ASCII digits, spaces and 'x', so it needs no escaping.
func (p *publisher) appendBody(dst []byte, l *lane, ts int64) []byte {
	if p.batch == 1 {
		dst = append(dst, `{"data":"`...)
		dst = p.appendPayload(dst, l.nextSeq, ts, l.id)
		return append(dst, `"}`...)
	}
	dst = append(dst, '[')
	for i := range p.batch {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"topic":`...)
		dst = append(dst, p.topicJS[l.topic]...)
		dst = append(dst, `,"data":"`...)
		dst = p.appendPayload(dst, l.nextSeq+uint64(i), ts, l.id)
		dst = append(dst, `"}`...)
	}
	return append(dst, ']')
}

func (p *publisher) appendPayload(dst []byte, seq uint64, ts int64, lane int) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, p.size)...)
	writePayload(dst[n:], seq, ts, lane)
	return dst
}

// published sums the events the service has accepted so far.
func (p *publisher) published() int64 {
	var sum int64
	for _, l := range p.lanes {
		sum += l.published.Load()
	}
	return sum
}
