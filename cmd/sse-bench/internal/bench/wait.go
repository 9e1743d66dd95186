package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

const (
	// readyPath is what the bench asks for to know a target answers: a
	// cheap route of the public listener that answers 200 whatever the
	// backend's state (/healthz and /readyz are on the admin listener,
	// which -url does not name).
	readyPath = "/openapi.yaml"
	// readyPoll is the pause between two tries.
	readyPoll = 100 * time.Millisecond
	// readyTry bounds one try, for a listener that accepts and stays silent.
	readyTry = 2 * time.Second
)

// waitForTargets polls every target until it answers, for at most wait in
// all: a server started just before the bench is still binding its
// listener, and streams dialed then would all fail. A target answers when
// GET <base>/openapi.yaml gets a status below 500; a 5xx (a proxy whose
// upstream is not up yet, a draining server) counts as not answering. Zero
// wait does not poll at all.
func waitForTargets(ctx context.Context, targets []Target, wait time.Duration, log *slog.Logger) error {
	if wait <= 0 {
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: readyTry}
	for _, t := range targets {
		err := waitForTarget(waitCtx, client, t, log)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("interrupted while waiting for %s to answer: %w", t.Base, err)
		}
		if err != nil {
			return fmt.Errorf("%s did not answer within %s (is sse-service listening there? -wait sets how long to wait): %w",
				t.Base, wait, err)
		}
	}
	return nil
}

// waitForTarget tries t until it answers or ctx ends, and returns the
// last failure then: the last one that says why (refused, a 5xx), not the
// try the deadline cut short.
func waitForTarget(ctx context.Context, client *http.Client, t Target, log *slog.Logger) error {
	var last error
	for tries := 0; ; tries++ {
		err := tryTarget(ctx, client, t.Base+readyPath)
		if err == nil {
			if tries > 0 {
				log.Info("target answers", "url", t.Base, "tries", tries+1)
			}
			return nil
		}
		if last == nil || ctx.Err() == nil {
			last = err
		}
		if tries == 0 {
			log.Info("waiting for the target to answer", "url", t.Base, "err", err)
		}
		timer := time.NewTimer(readyPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("last try: %w", last)
		case <-timer.C:
		}
	}
}

// tryTarget sends one GET to url and reports why it did not count as an
// answer.
func tryTarget(ctx context.Context, client *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // the dial error, without url.Error's "Get <url>:"
		}
		return fmt.Errorf("GET %s: %w", target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= http.StatusInternalServerError {
		return fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	return nil
}
