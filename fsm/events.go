package fsm

import (
	"bytes"
	"encoding/binary"

	"github.com/hats-trading/hats/market"
)

// Event logs behind the live streams. Each stream has its own gap-free
// sequence kept in the replicated state, so a client that reconnects to
// any node resumes exactly where it stopped:
//   - trades of a symbol: the trade sequence (the tape);
//   - quotes of a symbol: one snapshot of the book top per Market Engine
//     tick, numbered by the tick sequence, the newest QuoteRetention kept;
//   - a trader's orders: every change of any of their orders, numbered per
//     account (the house market maker's are not recorded).
var (
	bOrderEvents = []byte("order_event_chunks") // trader: account | chunk -> orders (chunklog.go)
	bQuotes      = []byte("quotes")             // market: symbol 0 tick seq -> quote
)

// QuoteRetention is how many tick snapshots per symbol are kept for
// resuming quote streams.
const QuoteRetention = 1000

// Quote is the top of a book at one tick.
type Quote struct {
	Symbol  string
	TickSeq uint64
	Time    int64
	Bid     int64
	BidSize int64
	Ask     int64
	AskSize int64
	Last    int64
	Ref     int64
}

func encodeQuote(w *writer, q *Quote) {
	w.str(q.Symbol)
	w.u(q.TickSeq)
	w.i(q.Time)
	w.i(q.Bid)
	w.i(q.BidSize)
	w.i(q.Ask)
	w.i(q.AskSize)
	w.i(q.Last)
	w.i(q.Ref)
}

func decodeQuote(r *reader) *Quote {
	return &Quote{Symbol: r.sym(), TickSeq: r.u(), Time: r.i(), Bid: r.i(), BidSize: r.i(), Ask: r.i(), AskSize: r.i(), Last: r.i(), Ref: r.i()}
}

// orderEvent appends the order's new state (enc, its encoded record) to
// its trader's order events; the house account's are not kept.
func (x *exch) orderEvent(o *market.Order, enc []byte) {
	if !x.f.houseKnown {
		x.f.houseAcct, x.f.houseKnown = getU64(x.tx.Bucket(bMeta), kHouse), true
	}
	if o.Account == x.f.houseAcct {
		return
	}
	b := x.tx.Bucket(bTrader).Bucket(bOrderEvents)
	seq, key := x.f.nextSeq(seqOrderEvents, b, o.Account)
	appendLog(b, key, seq, enc)
}

// recordQuotes stores every book's top at this tick and drops snapshots
// older than QuoteRetention ticks.
func (f *FSM) recordQuotes(tx *stx, tick uint64, now int64) {
	qb := tx.Bucket(bMarket).Bucket(bQuotes)
	for _, in := range (&View{tx: tx}).Instruments() {
		b := f.books[in.Symbol]
		q := &Quote{Symbol: in.Symbol, TickSeq: tick, Time: now, Last: b.Last, Ref: b.Ref}
		q.Bid, q.BidSize = b.BestBid()
		q.Ask, q.AskSize = b.BestAsk()
		must(qb.Put(tradeKey(in.Symbol, tick), encodeWith(q, encodeQuote)))
		if tick > QuoteRetention {
			must(qb.Delete(tradeKey(in.Symbol, tick-QuoteRetention)))
		}
	}
}

// OrderEvent is one change of one of a trader's orders.
type OrderEvent struct {
	Seq   uint64
	Order *market.Order
}

// OrderEvents returns a trader's order changes after seq, oldest first, at
// most limit.
func (v *View) OrderEvents(acct, after uint64, limit int) []OrderEvent {
	var out []OrderEvent
	if limit <= 0 {
		return nil
	}
	scanLog(v.tx.Bucket(bTrader).Bucket(bOrderEvents), u64key(acct), after+1, func(seq uint64, rec []byte) bool {
		out = append(out, OrderEvent{Seq: seq, Order: decodeWhole(rec, decodeOrder, "order event")})
		return len(out) < limit
	})
	return out
}

// LastOrderEvent is the newest order-event sequence of an account.
func (v *View) LastOrderEvent(acct uint64) uint64 {
	return lastSeq(v.tx.Bucket(bTrader).Bucket(bOrderEvents), acct)
}

// Quotes returns a symbol's tick snapshots after tick seq, oldest first, at
// most limit, and the oldest tick still retained.
func (v *View) Quotes(sym string, after uint64, limit int) (out []*Quote, oldest uint64) {
	c := v.tx.Bucket(bMarket).Bucket(bQuotes).Cursor()
	prefix := append([]byte(sym), 0)
	if k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		oldest = binary.BigEndian.Uint64(k[len(prefix):])
	}
	for k, val := c.Seek(tradeKey(sym, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, val = c.Next() {
		out = append(out, decodeWhole(val, decodeQuote, "quote"))
	}
	return out, oldest
}
