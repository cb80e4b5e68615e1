package transport

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hats-trading/hats/fsm"
)

// Live streams over Server-Sent Events: GET /v1/stream?symbols=A,B&orders=true.
//
// Each stream has its own gap-free sequence from the replicated state:
// "t.SYM" (trades, by trade sequence), "q.SYM" (book top per Market Engine
// tick, by tick sequence) and "o" (the caller's order changes, per
// account). Every event's SSE id is the whole cursor after it, e.g.
// "o:7,q.AAPL:45,t.AAPL:123"; a client that reconnects to any node with
// that id in Last-Event-ID (or ?cursor=) resumes every stream with no gap
// and no repeat. Streams missing from the cursor start live.

// StreamEvent is the data of one SSE event.
type StreamEvent struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Type   string `json:"type"` // trade, quote, order, gap

	Symbol    string `json:"symbol,omitempty"`
	Time      string `json:"time,omitempty"`
	Price     string `json:"price,omitempty"`
	Quantity  int64  `json:"quantity,omitempty"`
	TakerSide string `json:"taker_side,omitempty"`
	Bid       string `json:"bid,omitempty"`
	BidSize   int64  `json:"bid_size,omitempty"`
	Ask       string `json:"ask,omitempty"`
	AskSize   int64  `json:"ask_size,omitempty"`
	Last      string `json:"last,omitempty"`
	RefPrice  string `json:"ref_price,omitempty"`
	Order     *Order `json:"order,omitempty"`
	Stale     bool   `json:"stale,omitempty"` // quote older than a few ticks' worth
	Cursor    string `json:"cursor"`          // the SSE id: resume point after this event
	FromNode  string `json:"node,omitempty"`  // node that served it
	GapBefore uint64 `json:"gap_before,omitempty"`
}

// Cursor maps stream names to the last sequence delivered.
type Cursor map[string]uint64

// ParseCursor parses "name:seq,name:seq".
func ParseCursor(s string) (Cursor, error) {
	c := Cursor{}
	if strings.TrimSpace(s) == "" {
		return c, nil
	}
	for _, part := range strings.Split(s, ",") {
		name, seq, ok := strings.Cut(strings.TrimSpace(part), ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || name == "" {
			return nil, fmt.Errorf("%w: cursor: %q is not stream:seq", ErrBadRequest, part)
		}
		c[name] = n
	}
	return c, nil
}

// String formats the cursor with streams in name order.
func (c Cursor) String() string {
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ":" + strconv.FormatUint(c[n], 10)
	}
	return strings.Join(parts, ",")
}

const (
	streamPoll      = 50 * time.Millisecond
	streamHeartbeat = 10 * time.Second
	streamBatch     = 256
)

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var symbols []string
	for _, raw := range strings.Split(q.Get("symbols"), ",") {
		if raw = strings.TrimSpace(raw); raw == "" {
			continue
		}
		sym, e := s.checkSymbol(raw)
		if e != nil {
			writeError(w, e)
			return
		}
		symbols = append(symbols, sym)
	}
	wantOrders := q.Get("orders") == "true" || q.Get("orders") == "1"
	if len(symbols) == 0 && !wantOrders {
		writeError(w, badRequest("symbols", "name at least one symbol, or orders=true"))
		return
	}
	var p Principal
	if wantOrders {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			writeError(w, &APIError{Status: 401, Code: CodeUnauthenticated, Message: "orders stream: missing bearer token: log in first"})
			return
		}
		var err error
		if p, err = s.b.Authenticate(r.Context(), tok); err != nil {
			writeError(w, toAPIError(err))
			return
		}
	}
	raw := r.Header.Get("Last-Event-ID")
	if raw == "" {
		raw = q.Get("cursor")
	}
	cur, err := ParseCursor(raw)
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	// Streams not in the cursor start live: trades and orders after the
	// newest, quotes with the newest snapshot.
	_ = s.b.Read(r.Context(), Stale, func(v *fsm.View) error {
		for _, sym := range symbols {
			if _, ok := cur["t."+sym]; !ok {
				st, _ := v.BookStats(sym)
				cur["t."+sym] = st.TradeSeq
			}
			if _, ok := cur["q."+sym]; !ok {
				if fi := v.Feed(); fi.Seq > 0 {
					cur["q."+sym] = fi.Seq - 1
				} else {
					cur["q."+sym] = 0
				}
			}
		}
		if _, ok := cur["o"]; wantOrders && !ok {
			cur["o"] = v.LastOrderEvent(p.AccountID)
		}
		return nil
	})

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // streams outlive the server's write timeout
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": hats stream from %s, cursor %s\n\n", s.b.NodeID(), cur)
	_ = rc.Flush()

	tick := time.NewTicker(streamPoll)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		var events []StreamEvent
		_ = s.b.Read(r.Context(), Stale, func(v *fsm.View) error {
			events = s.collect(v, symbols, wantOrders, p, cur)
			return nil
		})
		for i := range events {
			ev := &events[i]
			cur[ev.Stream] = ev.Seq
			ev.Cursor = cur.String()
			ev.FromNode = s.b.NodeID()
			data, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.Cursor, ev.Type, data); err != nil {
				return
			}
			lastWrite = time.Now()
		}
		if len(events) == 0 && time.Since(lastWrite) > streamHeartbeat {
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			lastWrite = time.Now()
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if len(events) >= streamBatch {
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// collect reads every stream's new events from one consistent view.
func (s *Server) collect(v *fsm.View, symbols []string, orders bool, p Principal, cur Cursor) []StreamEvent {
	var out []StreamEvent
	fi := v.Feed()
	for _, sym := range symbols {
		for _, t := range v.Trades(sym, cur["t."+sym]+1, 0, streamBatch) {
			out = append(out, StreamEvent{Stream: "t." + sym, Seq: t.Seq, Type: "trade", Symbol: sym,
				Time: timeString(t.Time), Price: price(t.Price), Quantity: t.Qty, TakerSide: t.TakerSide.String()})
		}
		quotes, oldest := v.Quotes(sym, cur["q."+sym], streamBatch)
		for i, qt := range quotes {
			ev := StreamEvent{Stream: "q." + sym, Seq: qt.TickSeq, Type: "quote", Symbol: sym, Time: timeString(qt.Time),
				Bid: price(qt.Bid), BidSize: qt.BidSize, Ask: price(qt.Ask), AskSize: qt.AskSize,
				Last: price(qt.Last), RefPrice: price(qt.Ref), Stale: fi.Seq > qt.TickSeq+3}
			if i == 0 && cur["q."+sym] != 0 && qt.TickSeq > cur["q."+sym]+1 && oldest > cur["q."+sym]+1 {
				ev.GapBefore = qt.TickSeq - cur["q."+sym] - 1 // older snapshots were pruned
			}
			out = append(out, ev)
		}
	}
	if orders {
		for _, oe := range v.OrderEvents(p.AccountID, cur["o"], streamBatch) {
			ov := OrderView(oe.Order, false, 0)
			out = append(out, StreamEvent{Stream: "o", Seq: oe.Seq, Type: "order", Symbol: oe.Order.Symbol, Order: &ov})
		}
	}
	return out
}
