package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrStopWatch, returned by a Watch callback, ends the watch without error.
var ErrStopWatch = errors.New("stop watching")

// WatchRequest selects the live streams to follow.
type WatchRequest struct {
	Symbols []string
	Orders  bool   // the caller's own order changes (needs a session)
	Cursor  string // resume point (an event's Cursor); "" starts live
}

// streamIdle is how long a stream may stay silent (servers send a ping
// every 10 s) before the client reconnects elsewhere.
const streamIdle = 25 * time.Second

// Watch follows live streams, calling fn for every event in order. When the
// serving node dies or goes silent, it reconnects to another node with the
// last cursor, so events continue with no gap and no repeat. It returns when
// ctx ends (nil), fn returns ErrStopWatch (nil) or another error (that
// error), or no node accepts the stream for the client's deadline.
func (c *Client) Watch(ctx context.Context, req WatchRequest, fn func(StreamEvent) error) error {
	base, ok := c.hc.Transport.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	hc := &http.Client{Transport: base} // no overall timeout: streams are long
	cursor := req.Cursor
	backoff := backoffMin
	failingSince := time.Time{}
	for {
		if ctx.Err() != nil {
			return nil
		}
		progressed := false
		var lastErr error
		for _, node := range c.order() {
			var got bool
			got, cursor, lastErr = c.watchOnce(ctx, hc, node, req, cursor, fn)
			progressed = progressed || got
			if errors.Is(lastErr, ErrStopWatch) || ctx.Err() != nil {
				return nil
			}
			if ae := refusal(lastErr); ae != nil {
				return ae
			}
			if lastErr != nil && !errors.Is(lastErr, errStreamBroken) {
				return lastErr
			}
		}
		if progressed {
			failingSince, backoff = time.Time{}, backoffMin
		} else if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > c.deadline {
			return fmt.Errorf("%w: watch: no node served the stream for %v: %v", ErrNoNodes, c.deadline, lastErr)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, backoffMax)
	}
}

var errStreamBroken = errors.New("stream broken")

// watchOnce streams from one node until the connection ends. It returns
// whether any event arrived and the cursor after the last one.
func (c *Client) watchOnce(ctx context.Context, hc *http.Client, node string, req WatchRequest, cursor string, fn func(StreamEvent) error) (bool, string, error) {
	q := url.Values{}
	if len(req.Symbols) > 0 {
		q.Set("symbols", strings.Join(req.Symbols, ","))
	}
	if req.Orders {
		q.Set("orders", "true")
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hreq, err := http.NewRequestWithContext(sctx, http.MethodGet, node+"/v1/stream?"+q.Encode(), nil)
	if err != nil {
		return false, cursor, err
	}
	hreq.Header.Set("Accept", "text/event-stream")
	if cursor != "" {
		hreq.Header.Set("Last-Event-ID", cursor)
	}
	if req.Orders {
		if tok := c.Token(); tok != "" {
			hreq.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return false, cursor, fmt.Errorf("%w: %s: %v", errStreamBroken, node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		ae := decodeAPIError(resp.StatusCode, data)
		if retryable(ae) {
			return false, cursor, fmt.Errorf("%w: %s: %v", errStreamBroken, node, ae)
		}
		return false, cursor, ae
	}
	c.markAnswered(node)
	// A watchdog cancels the request when the stream goes silent.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(streamIdle)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-alive:
				t.Reset(streamIdle)
			case <-t.C:
				cancel()
				return
			}
		}
	}()
	got := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var data strings.Builder
	for sc.Scan() {
		select {
		case alive <- struct{}{}:
		default:
		}
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var ev StreamEvent
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return got, cursor, fmt.Errorf("%w: %s: bad event: %v", errStreamBroken, node, err)
			}
			data.Reset()
			got = true
			cursor = ev.Cursor
			if err := fn(ev); err != nil {
				return got, cursor, err
			}
		case strings.HasPrefix(line, "data: "):
			data.WriteString(line[len("data: "):])
		}
	}
	return got, cursor, fmt.Errorf("%w: %s: stream ended", errStreamBroken, node)
}
