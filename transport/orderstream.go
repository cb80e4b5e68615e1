package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
)

// The fast order-entry path: POST /v1/orders/stream keeps one connection
// open in both directions. The client writes one JSON request per line
// (NDJSON) and may send the next before earlier ones are answered; the
// server answers each with one JSON line carrying the request's tag, in
// completion order. Requests from one stream are committed concurrently, so
// the leader's group commit packs them into shared Raft entries. Exactly-
// once still rests on each order's client_id.

// StreamRequest is one line of an order stream.
type StreamRequest struct {
	Tag     string        `json:"tag"`                // echoed in the reply
	Op      string        `json:"op"`                 // place (default) or cancel
	Order   *OrderRequest `json:"order,omitempty"`    // op place
	OrderID uint64        `json:"order_id,omitempty"` // op cancel
}

// StreamReply is one line of the server's answer.
type StreamReply struct {
	Tag    string    `json:"tag"`
	Order  *Order    `json:"order,omitempty"`
	Error  *APIError `json:"error,omitempty"`
	Status int       `json:"status"` // the HTTP status the plain API would have used
}

const (
	maxStreamInflight = 1024
	maxStreamLine     = 16 << 10
	maxReplyYields    = 8
)

// orderProto is the Upgrade token of an order stream taken over from HTTP:
// a binary stream opened with it stops being an HTTP exchange once the
// server answers 101, so neither end pays for chunk framing, and the Go
// client writes its requests straight to the connection instead of
// through a pipe and net/http's body-writing goroutine.
const orderProto = "hats-orders/1"

func (s *Server) orderStream(w http.ResponseWriter, r *http.Request, p Principal) {
	// The client chooses the encoding by its request's Content-Type; the
	// reply's says which one the server speaks (a server that predates
	// the binary encoding answers NDJSON, and the Go client follows).
	bin := mediaType(r.Header.Get("Content-Type")) == StreamContentBinary
	if bin && strings.EqualFold(r.Header.Get("Upgrade"), orderProto) {
		s.upgradedOrderStream(w, r, p)
		return
	}
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, &APIError{Status: 500, Code: CodeInternal, Message: "order stream: full duplex unavailable: " + err.Error()})
		return
	}
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	if bin {
		w.Header().Set("Content-Type", StreamContentBinary)
	} else {
		w.Header().Set("Content-Type", StreamContentJSON)
	}
	// Name the leader, so a client can open its streams there instead of
	// having this node forward every order (the leader names itself).
	lead := s.b.LeaderHTTP()
	if lead != "" {
		w.Header().Set(HeaderLeader, lead)
	}
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	s.serveOrderStream(r.Context(), p, streamRequests(r.Body, bin, false), bin, lead, w, rc.Flush)
}

// upgradedOrderStream serves a binary order stream on the connection
// itself: the server answers 101 Switching Protocols (with the headers a
// plain stream's 200 carries) and then reads and writes the same frames
// without HTTP around them. A client ends its requests with an empty
// frame (explicit, where a half-close may not pass a proxy or TLS
// terminator); the server then answers what is in flight and closes the
// connection.
func (s *Server) upgradedOrderStream(w http.ResponseWriter, r *http.Request, p Principal) {
	extra := "Content-Type: " + StreamContentBinary + "\r\n"
	lead := s.b.LeaderHTTP()
	if lead != "" {
		extra += HeaderLeader + ": " + lead + "\r\n"
	}
	conn, brw, release := s.takeOver(w, "order stream", orderProto, extra)
	if conn == nil {
		return
	}
	defer release()
	bw := bufio.NewWriterSize(conn, 32<<10)
	flush := func() error {
		err := bw.Flush()
		if err != nil {
			_ = conn.Close() // the client is gone: this ends the read loop
		}
		return err
	}
	// The request's context stays valid after the hijack until this
	// handler returns.
	s.serveOrderStream(r.Context(), p, streamRequests(brw.Reader, true, true), true, lead, bw, flush)
}

// serveOrderStream reads an order stream's requests with next, applies
// them concurrently and writes each reply to w as it completes, calling
// flush when no further reply is waiting. It returns once the requests
// have ended and every reply has been handed to w and flushed. named is
// the leader the stream's open named; a binary stream is told when the
// node names another (watchLeader).
func (s *Server) serveOrderStream(ctx context.Context, p Principal, next func() (StreamRequest, *APIError, error), bin bool, named string, w io.Writer, flush func() error) {
	// One writer goroutine sends the replies; it flushes when no other
	// reply is waiting, so replies that complete together (a group
	// commit's worth) share one write to the connection. Before it
	// flushes it yields: the other requests of the same batch are woken
	// together and are still encoding their replies. It yields again
	// while a yield brought more replies (up to maxReplyYields times), so
	// a stream with many requests in a batch gathers them all, and a lone
	// request's reply waits for one yield only.
	//
	// Every reply holds a slot of sem from before its request is read
	// until the writer has written it, so out (as large as sem) always
	// has room: a reply is often sent from the goroutine that learned a
	// whole batch's results (AsyncApplier), and a client that stops
	// reading must stall only its own stream, never that goroutine.
	sem := make(chan struct{}, maxStreamInflight)
	out := make(chan []byte, maxStreamInflight)
	written := make(chan struct{})
	write := func(b []byte) {
		_, _ = w.Write(b)
		<-sem
	}
	go func() {
		defer close(written)
		for b := range out {
			write(b)
			yields, got := 0, true
		more:
			for {
				select {
				case b, ok := <-out:
					if !ok {
						break more
					}
					write(b)
					got = true
				default:
					if !got || yields == maxReplyYields {
						break more
					}
					yields, got = yields+1, false
					runtime.Gosched()
				}
			}
			_ = flush()
		}
	}()
	reply := func(rep StreamReply) {
		rep.Status = 200
		if rep.Error != nil {
			rep.Status = rep.Error.Status
		}
		if bin {
			out <- appendBlock(nil, appendStreamReply(nil, &rep))
			return
		}
		b, _ := json.Marshal(rep)
		out <- append(b, '\n')
	}
	// replyOrder answers with an order (and apiErr, if not nil).
	replyOrder := func(tag string, apiErr *APIError, o *market.Order, replay bool, index uint64) {
		if bin {
			out <- appendBlock(nil, appendStreamOrderReply(nil, tag, apiErr, o, replay, index))
			return
		}
		ov := OrderView(o, replay, index)
		reply(StreamReply{Tag: tag, Error: apiErr, Order: &ov})
	}
	var wg sync.WaitGroup
	dl := &SharedDeadlines{Parent: ctx, Timeout: streamRequestTimeout, Step: streamDeadlineStep}
	stop := make(chan struct{}) // ends watchLeader
	defer func() {
		close(stop)
		wg.Wait()
		close(out)
		<-written
		dl.Release()
	}()
	if lw, ok := s.b.(LeaderWatcher); ok && bin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.watchLeader(lw, named, stop, sem, out)
		}()
	}
	for {
		select { // the slot of this request's reply
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		req, ae, err := next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				<-sem // no reply
			} else {
				reply(StreamReply{Error: &APIError{Status: 400, Code: CodeBadRequest, Message: "order stream: " + err.Error()}})
			}
			return
		}
		if ae != nil {
			reply(StreamReply{Tag: req.Tag, Error: ae})
			continue
		}
		cmd, ae := s.streamCommand(p, &req)
		if ae != nil {
			reply(StreamReply{Tag: req.Tag, Error: ae})
			continue
		}
		wg.Add(1)
		tag := req.Tag
		s.applyAsync(dl.Get(time.Now()), cmd, func(res *fsm.Result, err error) {
			defer wg.Done()
			switch {
			case err != nil:
				reply(StreamReply{Tag: tag, Error: toAPIError(err)})
			case res.Code != fsm.CodeOK && res.Order == nil:
				reply(StreamReply{Tag: tag, Error: marketResultError(res)})
			case res.Code != fsm.CodeOK:
				replyOrder(tag, marketResultError(res), res.Order, res.Replay, res.Index)
			case res.Order == nil:
				reply(StreamReply{Tag: tag, Error: &APIError{Status: 500, Code: CodeInternal, Message: "no order in result"}})
			default:
				replyOrder(tag, nil, res.Order, res.Replay, res.Index)
			}
		})
	}
}

// LeaderWatcher is a Backend that says when its view of the leader
// changes (node.Node.LeaderChanged).
type LeaderWatcher interface {
	// LeaderChanged returns a channel closed at the next change.
	LeaderChanged() <-chan struct{}
}

// leaderMovedStatus is the status of a leader_moved notice: where to go
// (not an error; no request carries it).
const leaderMovedStatus = http.StatusTemporaryRedirect

// watchLeader tells a binary order stream, until stop closes, whenever
// its node names a leader other than the one it last named (at the open,
// named; "" for none): a notice, tagged "", with code leader_moved and
// the leader's HTTP address. After a leadership transfer, or a stream
// opened at a follower during an election, clients then learn where the
// stream belongs without opening another to ask. An election's interval
// with no leader sends nothing. The notice holds a slot of sem, like a
// reply, so it waits (or is skipped at stop) when the client reads
// nothing.
func (s *Server) watchLeader(lw LeaderWatcher, named string, stop <-chan struct{}, sem chan struct{}, out chan<- []byte) {
	// Also look every leaderRecheck: a change can come while the new
	// leader's HTTP address is not yet recorded, and an address can
	// change without a leader change.
	tick := time.NewTicker(leaderRecheck)
	defer tick.Stop()
	for {
		changed := lw.LeaderChanged()
		if lead := s.b.LeaderHTTP(); lead != "" && lead != named {
			select {
			case sem <- struct{}{}:
			case <-stop:
				return
			}
			named = lead
			rep := StreamReply{Status: leaderMovedStatus, Error: &APIError{Status: leaderMovedStatus, Code: CodeLeaderMoved,
				Message: "this node now names another leader: open order streams there", Leader: lead}}
			out <- appendBlock(nil, appendStreamReply(nil, &rep))
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-stop:
			return
		}
	}
}

// leaderRecheck is how often watchLeader looks without being told.
const leaderRecheck = time.Second

// AsyncApplier is a Backend that can apply a command without a goroutine
// waiting for it (node.Node.ApplyAsync): done is called exactly once,
// before ApplyAsync returns or later from another goroutine, and must not
// block.
type AsyncApplier interface {
	ApplyAsync(ctx context.Context, cmd *fsm.Command, done func(*fsm.Result, error))
}

// applyAsync applies cmd and calls done with its outcome, through the
// backend's ApplyAsync when it has one.
func (s *Server) applyAsync(ctx context.Context, cmd *fsm.Command, done func(*fsm.Result, error)) {
	if a, ok := s.b.(AsyncApplier); ok {
		a.ApplyAsync(ctx, cmd, done)
		return
	}
	go func() { done(s.b.Apply(ctx, cmd)) }()
}

// streamRequestTimeout bounds each order-stream request, as a plain
// request's own deadline would; requests that arrive within
// streamDeadlineStep of each other share one context with that deadline
// (so the bound is streamRequestTimeout give or take a step), because a
// timer per request cost the leader several percent of its CPU.
const (
	streamRequestTimeout = 10 * time.Second
	streamDeadlineStep   = 100 * time.Millisecond
)

// SharedDeadlines hands out contexts that bound operations by Timeout
// while sharing one context among the operations that start within Step
// of each other (a timer per operation is costly at tens of thousands of
// operations a second), so each is bounded by Timeout give or take a Step.
// A replaced context runs until its deadline, for the operations still
// using it, and is released then or by Release, so at most Timeout/Step+1
// are live. Get is for one goroutine at a time (an order stream's read
// loop, one load generator client).
type SharedDeadlines struct {
	Parent        context.Context
	Timeout, Step time.Duration

	ctx   context.Context
	fresh time.Time // ctx is handed out until then
	live  []deadlineCtx
}

type deadlineCtx struct {
	until  time.Time
	cancel context.CancelFunc
}

// Get returns the context for an operation starting at now.
func (d *SharedDeadlines) Get(now time.Time) context.Context {
	if d.ctx != nil && now.Before(d.fresh) {
		return d.ctx
	}
	n := 0
	for _, c := range d.live { // release the ones past their deadline
		if now.After(c.until) {
			c.cancel()
			continue
		}
		d.live[n] = c
		n++
	}
	d.live = d.live[:n]
	until := now.Add(d.Timeout)
	ctx, cancel := context.WithDeadline(d.Parent, until)
	d.ctx, d.fresh = ctx, now.Add(d.Step)
	d.live = append(d.live, deadlineCtx{until: until, cancel: cancel})
	return ctx
}

// Release cancels every context handed out (their operations are over).
func (d *SharedDeadlines) Release() {
	for _, c := range d.live {
		c.cancel()
	}
	d.live, d.ctx = nil, nil
}

// streamRequests returns a function that reads the next request of an
// order stream in the given encoding. A request that does not decode is
// answered (ae, with its tag when known) and the stream goes on; err ends
// the stream (io.EOF: the client closed it, or, with emptyEnds, sent an
// empty frame).
func streamRequests(body io.Reader, bin, emptyEnds bool) func() (req StreamRequest, ae *APIError, err error) {
	if bin {
		br, ok := body.(*bufio.Reader)
		if !ok {
			br = bufio.NewReader(body)
		}
		return func() (StreamRequest, *APIError, error) {
			frame, err := readBlock(br, maxStreamLine)
			if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					err = fmt.Errorf("%w: truncated frame", errStreamFrame)
				}
				return StreamRequest{}, nil, err
			}
			if len(frame) == 0 && emptyEnds {
				return StreamRequest{}, nil, io.EOF // the client's last request
			}
			req, err := decodeStreamRequest(frame)
			if err != nil {
				return req, &APIError{Status: 400, Code: CodeBadRequest, Message: err.Error()}, nil
			}
			return req, nil, nil
		}
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 4096), maxStreamLine)
	return func() (StreamRequest, *APIError, error) {
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 {
				continue
			}
			var req StreamRequest
			if err := json.Unmarshal(line, &req); err != nil {
				return req, &APIError{Status: 400, Code: CodeBadJSON, Message: "malformed JSON line: " + err.Error()}, nil
			}
			return req, nil, nil
		}
		if err := sc.Err(); err != nil {
			return StreamRequest{}, nil, err
		}
		return StreamRequest{}, nil, io.EOF
	}
}

// streamCommand validates one stream request exactly as the plain API
// would and builds its command.
func (s *Server) streamCommand(p Principal, req *StreamRequest) (*fsm.Command, *APIError) {
	switch req.Op {
	case "", "place":
		if req.Order == nil {
			return nil, badRequest("order", "op place needs an order")
		}
		o, e := ValidateOrderRequest(req.Order)
		if e != nil {
			return nil, e
		}
		if _, e := s.checkSymbol(o.Symbol); e != nil {
			return nil, e
		}
		return &fsm.Command{
			Type: fsm.TypePlaceOrder, Account: p.AccountID, ClientID: o.ClientID, Symbol: o.Symbol,
			Side: uint8(o.Side), OrdType: uint8(o.Type), TIF: uint8(o.TIF), PostOnly: o.PostOnly,
			Qty: o.Qty, Limit: o.Limit, Stop: o.Stop,
		}, nil
	case "cancel":
		if req.OrderID == 0 {
			return nil, badRequest("order_id", "op cancel needs an order_id")
		}
		return &fsm.Command{Type: fsm.TypeCancelOrder, Account: p.AccountID, OrderID: req.OrderID}, nil
	}
	return nil, badRequest("op", "must be place or cancel, got %q", req.Op)
}
