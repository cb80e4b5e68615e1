package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// OrderStream is the client side of the fast order-entry path: one
// persistent connection on which orders are pipelined and answered by tag.
// It is safe for concurrent use; each Place waits only for its own answer.
// If the connection breaks, requests still waiting fail with an
// *OutcomeUnknownError carrying their client order ID: resolve them with
// OrderByClientID (or resend: the client ID makes a repeat harmless).
type OrderStream struct {
	c      *Client
	node   string          // base URL of the node the stream is open to
	tr     *http.Transport // this stream's own: its connection is closed with the stream
	out    io.Writer       // where requests go: pw, or the connection itself (upgraded)
	pw     *io.PipeWriter  // the request body of a stream that stays HTTP (nil when upgraded)
	resp   *http.Response
	bin    bool               // the binary encoding (else NDJSON)
	cancel context.CancelFunc // ends the request (and an upgraded connection): Abort

	mu      sync.Mutex
	leader  string // base URL of the leader as the node last named it ("" if none): at the open, then by leader_moved notices
	next    uint64
	waiting map[string]chan StreamReply
	err     error
	done    chan struct{} // closed when read ends

	// Requests are encoded into pending and written by one goroutine
	// (write): whatever queued while the previous write was on its way
	// goes out in the next one, so pipelined requests share a chunk and a
	// system call instead of costing one each.
	pending []byte // under mu
	closing bool   // under mu: Close was called; write exits once pending is out
	kick    chan struct{}
	wrote   chan struct{} // closed when write ends
}

var (
	errStreamOpenTimeout = errors.New("order stream: no response in time")
	errStreamAborted     = errors.New("order stream aborted")
)

// HeaderLeader is the response header with which a node that opens an
// order stream names the leader's HTTP address as it knows it (absent when
// it knows none). Every order is applied by the leader: a follower only
// forwards it there, which costs a hop and its CPU on both ends.
const HeaderLeader = "Hats-Leader"

// streamLeaderBudget bounds an open at the leader: the node the client
// would otherwise use is tried next, so a leader that went away (or a
// stale hint) costs at most this long, not a whole request timeout.
const streamLeaderBudget = 2 * time.Second

// OpenOrderStream opens an order stream, in the binary encoding (NDJSON if
// the node only speaks that), to the leader when the client knows it and
// else to the preferred node (the session's Trading Server). A node that
// is not the leader names the leader when it answers; the client then
// opens a stream there instead and keeps the first one only if the
// leader does not answer in time (SetOrderStreamsToLeader turns this
// off). ctx bounds the stream's whole life, not just the open. The open
// at each node is bounded by the client's request timeout, and each try
// at the leader by the smaller of that and 2 s (a leader that did not
// answer is not tried again for 5 s).
func (c *Client) OpenOrderStream(ctx context.Context) (*OrderStream, error) {
	return c.openOrderStream(ctx, StreamContentBinary)
}

// OpenOrderStreamNDJSON opens an order stream in the NDJSON encoding, the
// one people and scripts use; programs want OpenOrderStream.
func (c *Client) OpenOrderStreamNDJSON(ctx context.Context) (*OrderStream, error) {
	return c.openOrderStream(ctx, StreamContentJSON)
}

// SetOrderStreamsToLeader says whether order streams go to the leader
// (the default) or stay on the node the client prefers, as calls do.
func (c *Client) SetOrderStreamsToLeader(on bool) {
	c.mu.Lock()
	c.streamsStay = !on
	if !on {
		c.streamLeader = ""
	}
	c.mu.Unlock()
}

// streamLeaderHint returns the leader streams go to ("" when none is
// known or streams stay on the preferred node).
func (c *Client) streamLeaderHint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streamsStay {
		return ""
	}
	return c.streamLeader
}

func (c *Client) setStreamLeader(lead string) {
	c.mu.Lock()
	if !c.streamsStay {
		c.streamLeader = lead
	}
	c.mu.Unlock()
}

// forgetStreamLeader drops the hint if it still names node: a stream there
// failed, so the next open starts from the preferred node again.
func (c *Client) forgetStreamLeader(node string) {
	c.mu.Lock()
	if c.streamLeader == node {
		c.streamLeader = ""
	}
	c.mu.Unlock()
}

func (c *Client) openOrderStream(ctx context.Context, contentType string) (*OrderStream, error) {
	tok := c.Token()
	if tok == "" {
		return nil, fmt.Errorf("%w: order stream needs a session", ErrUnauthenticated)
	}
	var lastErr error
	if lead := c.streamLeaderHint(); lead != "" {
		s, err := c.openStreamAt(ctx, lead, tok, contentType, min(c.timeout, streamLeaderBudget))
		if err == nil {
			if s.AtLeader() {
				return s, nil
			}
			// It no longer leads (a transfer, or it stepped down): go
			// where it points, as from any other node.
			c.forgetStreamLeader(lead)
			return c.moveToLeader(ctx, s, tok, contentType), nil
		}
		c.forgetStreamLeader(lead)
		c.leaderFailed(lead)
		if refusal(err) != nil {
			return nil, err
		}
		c.log.Debug("order stream: leader did not answer", "node", lead, "err", err)
		lastErr = err
	}
	for _, node := range c.order() {
		s, err := c.openStreamAt(ctx, node, tok, contentType, c.timeout)
		if err != nil {
			if refusal(err) != nil {
				return nil, err
			}
			lastErr = err
			continue
		}
		c.markAnswered(node)
		return c.moveToLeader(ctx, s, tok, contentType), nil
	}
	return nil, fmt.Errorf("%w: order stream: %v", ErrNoNodes, lastErr)
}

// moveToLeader returns a stream open at the leader the node of s named,
// closing s (nothing has been sent on it), or s itself when s is at the
// leader already, no leader is known, streams stay, the named leader
// failed to answer an open within streamLeaderRetry, or it does not
// answer in time now.
func (c *Client) moveToLeader(ctx context.Context, s *OrderStream, tok, contentType string) *OrderStream {
	lead := s.Leader()
	if lead == "" || c.streamsStayPut() {
		return s
	}
	if lead == s.node {
		c.setStreamLeader(lead)
		return s
	}
	if c.leaderRecentlyFailed(lead) {
		return s
	}
	ls, err := c.openStreamAt(ctx, lead, tok, contentType, min(c.timeout, streamLeaderBudget))
	if err != nil {
		c.leaderFailed(lead)
		c.log.Debug("order stream: staying on a follower: the leader did not answer", "node", s.node, "leader", lead, "err", err)
		return s
	}
	if ls.AtLeader() { // else it stepped down in between: no hint
		c.setStreamLeader(lead)
	}
	s.Abort()
	return ls
}

// streamLeaderRetry is how long a leader that did not answer an open is
// not tried again by moveToLeader: a paused node, or an address the
// client cannot reach, would otherwise cost every open the leader
// budget.
const streamLeaderRetry = 5 * time.Second

func (c *Client) leaderFailed(addr string) {
	c.mu.Lock()
	c.failedLeader, c.failedUntil = addr, time.Now().Add(streamLeaderRetry)
	c.mu.Unlock()
}

func (c *Client) leaderRecentlyFailed(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failedLeader == addr && time.Now().Before(c.failedUntil)
}

func (c *Client) streamsStayPut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streamsStay
}

// openStreamAt opens an order stream at one node, on a transport of its
// own (the stream's connection is closed with it). budget bounds the open:
// the time until the node's answer starts. A binary stream is taken over
// from HTTP (orderProto) unless the node answers the upgrade with a plain
// stream's 200 (a server that predates it): then it is opened again as an
// HTTP stream.
func (c *Client) openStreamAt(ctx context.Context, node, tok, contentType string, budget time.Duration) (*OrderStream, error) {
	if contentType == StreamContentBinary {
		start := time.Now()
		s, err := c.openUpgradedStream(ctx, node, tok, budget)
		if !errors.Is(err, errNoUpgrade) {
			return s, err
		}
		budget -= time.Since(start) // one budget for both tries
		if budget <= 0 {
			return nil, errStreamOpenTimeout
		}
	}
	return c.openHTTPStream(ctx, node, tok, contentType, budget)
}

// errNoUpgrade: the node (or something between) answered an upgraded
// stream's open with neither 101 nor a refusal of the caller: a plain
// stream's 200 from a node that predates orderProto, or an error from a
// proxy that does not pass upgrades on. A plain HTTP stream may still
// work there.
var errNoUpgrade = errors.New("order stream: the node does not upgrade")

// streamRequest builds the request that opens a stream at node, on a
// transport of the stream's own; ctx, or the cancel it returns, ends it.
func (c *Client) streamRequest(ctx context.Context, node, tok, contentType string, body io.Reader) (*http.Client, *http.Transport, *http.Request, context.CancelFunc, error) {
	base, ok := c.hc.Transport.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	tr := base.Clone()
	tr.ForceAttemptHTTP2 = false // full duplex, or an upgrade, over HTTP/1.1
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodPost, node+"/v1/orders/stream", body)
	if err != nil {
		cancel()
		return nil, nil, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", contentType)
	return &http.Client{Transport: tr}, tr, req, cancel, nil
}

// openUpgradedStream opens a binary stream that leaves HTTP once the node
// answers 101: requests are then written straight to the connection.
func (c *Client) openUpgradedStream(ctx context.Context, node, tok string, budget time.Duration) (*OrderStream, error) {
	hc, tr, req, cancel, err := c.streamRequest(ctx, node, tok, StreamContentBinary, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", orderProto)
	timer := time.AfterFunc(budget, cancel)
	resp, err := hc.Do(req)
	inTime := timer.Stop()
	switch {
	case err != nil && !inTime:
		err = errStreamOpenTimeout
	case err != nil:
	case !inTime: // answered just as the budget ran out
		resp.Body.Close()
		err = errStreamOpenTimeout
	case resp.StatusCode == http.StatusSwitchingProtocols:
		if _, ok := resp.Body.(io.Writer); !ok || !strings.EqualFold(resp.Header.Get("Upgrade"), orderProto) {
			resp.Body.Close()
			err = fmt.Errorf("%w: order stream at %s: switched to %q, not %s", ErrUnavailable, node, resp.Header.Get("Upgrade"), orderProto)
		}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		resp.Body.Close()
		err = decodeAPIError(resp.StatusCode, data) // a plain stream would be refused too
	default:
		resp.Body.Close()
		err = errNoUpgrade
	}
	if err != nil {
		cancel()
		tr.CloseIdleConnections()
		return nil, err
	}
	// net/http hands an upgraded connection to its caller and no longer
	// watches the request's context: ending the stream's context (ctx, or
	// Abort) closes it here.
	context.AfterFunc(req.Context(), func() { _ = resp.Body.Close() })
	return c.newOrderStream(node, tr, nil, resp, cancel, true), nil
}

// openHTTPStream opens a stream that stays an HTTP exchange: the requests
// are the body of a POST, through a pipe, and the replies its response's
// body.
func (c *Client) openHTTPStream(ctx context.Context, node, tok, contentType string, budget time.Duration) (*OrderStream, error) {
	pr, pw := io.Pipe()
	// The request lives as long as the stream: ctx ends it, and so does
	// Abort.
	hc, tr, req, cancel, err := c.streamRequest(ctx, node, tok, contentType, pr)
	if err != nil {
		return nil, err
	}
	// The request body is a pipe that stays open for the stream's life.
	// If the connection fails while the request is being sent, net/http
	// waits for the body's writer to finish before Do returns, which it
	// never would on its own: closing the pipe when ctx ends or the budget
	// runs out unblocks it, and cancelling the request ends a connect or
	// a wait for the answer.
	stopOnCtx := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
	timer := time.AfterFunc(budget, func() {
		pw.CloseWithError(errStreamOpenTimeout)
		cancel()
	})
	resp, err := hc.Do(req)
	inTime := timer.Stop()
	stopOnCtx()
	switch {
	case err == nil && !inTime: // answered just as the budget ran out: the stream is already cut
		resp.Body.Close()
		err = errStreamOpenTimeout
	case err == nil && resp.StatusCode != http.StatusOK:
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		resp.Body.Close()
		err = decodeAPIError(resp.StatusCode, data)
	}
	if err != nil {
		pw.Close()
		cancel()
		tr.CloseIdleConnections()
		return nil, err
	}
	return c.newOrderStream(node, tr, pw, resp, cancel, mediaType(resp.Header.Get("Content-Type")) == StreamContentBinary), nil
}

// newOrderStream starts the stream's reader and writer. pw is the request
// body of a stream that stays HTTP; nil for an upgraded one, whose
// response body is the connection.
func (c *Client) newOrderStream(node string, tr *http.Transport, pw *io.PipeWriter, resp *http.Response, cancel context.CancelFunc, bin bool) *OrderStream {
	s := &OrderStream{c: c, node: node, tr: tr, pw: pw, resp: resp, cancel: cancel, bin: bin, waiting: map[string]chan StreamReply{}, done: make(chan struct{}),
		kick: make(chan struct{}, 1), wrote: make(chan struct{})}
	s.out = io.Writer(pw)
	if s.upgraded() {
		s.out = resp.Body.(io.Writer)
	}
	if h := resp.Header.Get(HeaderLeader); h != "" {
		s.leader = leaderURL(h, node)
	}
	go s.read()
	go s.write()
	return s
}

// leaderURL turns a node's HeaderLeader value into a base URL, taking
// the scheme of the node that sent it when the value has none; "" when it
// is not an address.
func leaderURL(h, from string) string {
	if !strings.Contains(h, "://") {
		if i := strings.Index(from, "://"); i > 0 {
			h = from[:i+3] + h
		}
	}
	u, err := NormalizeAddr(h)
	if err != nil || (strings.HasPrefix(from, "https://") && !strings.HasPrefix(u, "https://")) {
		return "" // not an address, or a downgrade to plaintext: the token would travel in the clear
	}
	return u
}

// write hands queued requests to the connection, all that queued in one
// write. A failed write means the connection is gone: closing the
// response ends read, which fails every request still waiting. It ends
// when Close has had everything sent (on an upgraded stream, followed by
// the empty frame that ends its requests), or when read ends.
func (s *OrderStream) write() {
	defer close(s.wrote)
	var buf []byte
	for {
		select {
		case <-s.kick:
		case <-s.done:
			// The connection is gone and read has failed every request
			// still waiting: nothing queued can be sent any more.
			return
		}
		// Let the goroutines woken by the same batch of replies queue
		// their next requests first: they then share this write.
		runtime.Gosched()
		s.mu.Lock()
		buf, s.pending = s.pending, buf[:0]
		closing := s.closing
		s.mu.Unlock()
		if closing && s.upgraded() {
			buf = appendBlock(buf, nil)
		}
		if len(buf) > 0 {
			if _, err := s.out.Write(buf); err != nil {
				s.resp.Body.Close()
				return
			}
		}
		if closing {
			return
		}
	}
}

// Node returns the base URL of the node the stream is open to: usually
// the leader (later streams open there first), else the node the client
// tried first, which calls then prefer too.
func (s *OrderStream) Node() string { return s.node }

// AtLeader reports whether the node the stream is open to names itself
// the leader: when the stream opened, and since then as far as its
// leader_moved notices tell (a leadership transfer makes it false; open
// a new stream, which goes to the new leader, and close this one once
// its answers are in).
func (s *OrderStream) AtLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader != "" && s.leader == s.node
}

// Leader returns the base URL of the leader as the stream's node last
// named it ("" when it named none).
func (s *OrderStream) Leader() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

// upgraded reports whether the stream left HTTP after its open
// (orderProto): its requests go straight to the connection.
func (s *OrderStream) upgraded() bool { return s.pw == nil }

// Binary reports whether the stream uses the binary encoding (else NDJSON).
func (s *OrderStream) Binary() bool { return s.bin }

func (s *OrderStream) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *OrderStream) read() {
	defer close(s.done)
	next := s.replies()
	var err error
	for {
		var rep StreamReply
		if rep, err = next(); err != nil {
			break
		}
		if rep.Error != nil {
			rep.Error.Status = rep.Status
			if rep.Tag == "" && rep.Error.Code == CodeLeaderMoved {
				s.leaderMoved(rep.Error.Leader)
				continue
			}
		}
		s.mu.Lock()
		ch := s.waiting[rep.Tag]
		delete(s.waiting, rep.Tag)
		s.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	// Whatever ended the replies (the server went away, or sent a frame
	// that does not decode), the stream is over: drop the connection
	// rather than leave it open until Close, and release the request's
	// context and the stream's transport even if Close never comes.
	_ = s.resp.Body.Close()
	s.cancel()
	s.tr.CloseIdleConnections()
	s.mu.Lock()
	broken := !s.closing // the node went away or broke the stream
	s.mu.Unlock()
	if broken {
		s.c.forgetStreamLeader(s.node)
	}
	s.mu.Lock()
	s.err = err
	waiting := s.waiting
	s.waiting = map[string]chan StreamReply{}
	s.mu.Unlock()
	for _, ch := range waiting {
		close(ch)
	}
}

// leaderMoved takes a leader_moved notice: the stream's node now names
// addr (HOST:PORT) the leader. Later opens go there first.
func (s *OrderStream) leaderMoved(addr string) {
	lead := leaderURL(addr, s.node)
	if lead == "" {
		return
	}
	s.mu.Lock()
	s.leader = lead
	s.mu.Unlock()
	if !s.c.leaderRecentlyFailed(lead) {
		s.c.setStreamLeader(lead)
	}
}

// replies returns a function that reads the next reply in the stream's
// encoding. An NDJSON line that does not decode is skipped; a binary frame
// that does not decode ends the stream (the server never sends one).
func (s *OrderStream) replies() func() (StreamReply, error) {
	if s.bin {
		br := bufio.NewReader(s.resp.Body)
		return func() (StreamReply, error) {
			frame, err := readBlock(br, maxStreamReply)
			if err != nil {
				return StreamReply{}, err
			}
			return decodeStreamReply(frame)
		}
	}
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 4096), maxStreamReply)
	return func() (StreamReply, error) {
		for sc.Scan() {
			var rep StreamReply
			if json.Unmarshal(sc.Bytes(), &rep) == nil {
				return rep, nil
			}
		}
		if err := sc.Err(); err != nil {
			return StreamReply{}, err
		}
		return StreamReply{}, io.EOF
	}
}

// Place sends an order and waits for its answer. The client ID is
// generated when empty.
func (s *OrderStream) Place(ctx context.Context, req OrderRequest) (*Order, error) {
	if req.ClientID == "" {
		req.ClientID = NewClientID()
	}
	rep, err := s.roundTrip(ctx, StreamRequest{Op: "place", Order: &req}, req.ClientID)
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		if rep.Order != nil {
			return rep.Order, &OrderRejectedError{Order: rep.Order, Err: rep.Error}
		}
		return nil, rep.Error
	}
	return rep.Order, nil
}

// Cancel cancels an order through the stream.
func (s *OrderStream) Cancel(ctx context.Context, id uint64) (*Order, error) {
	rep, err := s.roundTrip(ctx, StreamRequest{Op: "cancel", OrderID: id}, "")
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		return rep.Order, rep.Error
	}
	return rep.Order, nil
}

func (s *OrderStream) roundTrip(ctx context.Context, req StreamRequest, clientID string) (StreamReply, error) {
	ch := make(chan StreamReply, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return StreamReply{}, fmt.Errorf("%w: order stream closed: %v", ErrUnavailable, err)
	}
	if s.closing {
		s.mu.Unlock()
		return StreamReply{}, fmt.Errorf("%w: order stream closed", ErrUnavailable)
	}
	s.next++
	req.Tag = strconv.FormatUint(s.next, 10)
	var err error
	if s.bin {
		var body []byte
		if body, err = appendStreamRequest(nil, &req); err == nil {
			s.pending = appendBlock(s.pending, body)
		}
	} else {
		var line []byte
		if line, err = json.Marshal(req); err == nil {
			s.pending = append(append(s.pending, line...), '\n')
		}
	}
	if err != nil {
		s.mu.Unlock()
		return StreamReply{}, fmt.Errorf("%w: order stream: %v", ErrBadRequest, err)
	}
	s.waiting[req.Tag] = ch
	s.mu.Unlock()
	s.wake()
	select {
	case rep, ok := <-ch:
		if !ok {
			return StreamReply{}, &OutcomeUnknownError{Key: clientID, Err: errors.New("order stream broke before the answer")}
		}
		return rep, nil
	case <-ctx.Done():
		return StreamReply{}, &OutcomeUnknownError{Key: clientID, Err: ctx.Err()}
	}
}

// Abort drops the stream's connection at once, without waiting for the
// server: for a node that stopped answering (a Place whose context ended
// with no reply is the sign), where Close would wait as long as the node
// does. Requests still waiting fail with an *OutcomeUnknownError; resolve
// them by resending on another stream (the client ID makes a repeat
// harmless). Abort after Close, or twice, is harmless.
func (s *OrderStream) Abort() {
	s.c.forgetStreamLeader(s.node)
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	if s.upgraded() {
		_ = s.resp.Body.Close() // the connection itself: nothing more is sent
	} else {
		s.pw.CloseWithError(errStreamAborted)
	}
	s.cancel() // the connection closes, which ends read
	<-s.done
	_ = s.resp.Body.Close()
}

// Close ends the stream after the server has answered what was sent.
func (s *OrderStream) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wake()
	select {
	case <-s.wrote: // everything queued was handed to the connection
	case <-s.done: // the connection is gone; closing the pipe ends a stuck write
	}
	if !s.upgraded() {
		s.pw.Close() // the end of the requests; an upgraded stream sent an empty frame
	}
	<-s.done
	err := s.resp.Body.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil // an upgraded connection, closed when its replies ended
	}
	s.cancel()
	return err
}
