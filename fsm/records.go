package fsm

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// Stored record encodings of the exchange. Each has an encode/decode pair
// here and a round-trip test; field order is part of the file format and
// fields are only ever appended.

func encodeOrder(w *writer, o *market.Order) {
	w.u(o.ID)
	w.str(o.ClientID)
	w.u(o.Account)
	w.str(o.Symbol)
	w.byte1(byte(o.Side))
	w.byte1(byte(o.Type))
	w.byte1(byte(o.TIF))
	w.boolean(o.PostOnly)
	w.i(o.Qty)
	w.i(o.Filled)
	w.i(o.Limit)
	w.i(o.Stop)
	w.i(o.Cap)
	w.byte1(byte(o.Status))
	w.str(o.Reason)
	w.boolean(o.Triggered)
	w.i(o.Created)
	w.i(o.Updated)
	w.i(o.ExpiresAt)
	w.u(o.Seq)
	w.i(o.Notional)
	w.str(o.RejectCode)
}

func decodeOrder(r *reader) *market.Order {
	return &market.Order{
		ID: r.u(), ClientID: r.str(), Account: r.u(), Symbol: r.sym(),
		Side: market.Side(r.byte1()), Type: market.Type(r.byte1()), TIF: market.TIF(r.byte1()), PostOnly: r.boolean(),
		Qty: r.i(), Filled: r.i(), Limit: r.i(), Stop: r.i(), Cap: r.i(),
		Status: market.Status(r.byte1()), Reason: r.str(), Triggered: r.boolean(),
		Created: r.i(), Updated: r.i(), ExpiresAt: r.i(), Seq: r.u(), Notional: r.i(), RejectCode: r.str(),
	}
}

// OrderBytes and ParseOrder are the order record codec, exported for the
// wire (forwarded results) and tests.
func OrderBytes(o *market.Order) []byte {
	w := writer{}
	encodeOrder(&w, o)
	return w.b
}

// ParseOrder decodes OrderBytes.
func ParseOrder(b []byte) (*market.Order, error) {
	r := reader{b: b}
	o := decodeOrder(&r)
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("order record: %w", err)
	}
	return o, nil
}

func encodePosition(w *writer, p *trader.Position) {
	w.str(p.Symbol)
	w.i(p.Qty)
	w.i(p.Reserved)
	w.i(p.Cost)
	w.i(p.Realized)
}

func decodePosition(r *reader) *trader.Position {
	return &trader.Position{Symbol: r.sym(), Qty: r.i(), Reserved: r.i(), Cost: r.i(), Realized: r.i()}
}

func encodeEntry(w *writer, e *trader.Entry) {
	w.u(e.Seq)
	w.i(e.Time)
	w.str(e.Kind)
	w.str(e.Symbol)
	w.i(e.Qty)
	w.i(e.Price)
	w.i(e.Cash)
	w.i(e.CashAfter)
	w.i(e.SharesAfter)
	w.u(e.OrderID)
	w.u(e.TradeSeq)
}

func decodeEntry(r *reader) *trader.Entry {
	return &trader.Entry{
		Seq: r.u(), Time: r.i(), Kind: r.sym(), Symbol: r.sym(), Qty: r.i(), Price: r.i(),
		Cash: r.i(), CashAfter: r.i(), SharesAfter: r.i(), OrderID: r.u(), TradeSeq: r.u(),
	}
}

func encodeInstrument(w *writer, in *market.Instrument) {
	w.str(in.Symbol)
	w.str(in.Name)
	w.i(in.RefPrice)
}

func decodeInstrument(r *reader) *market.Instrument {
	return &market.Instrument{Symbol: r.str(), Name: r.str(), RefPrice: r.i(), Tick: 1, Lot: 1}
}

// Trade is one execution on the tape.
type Trade struct {
	Symbol     string
	Seq        uint64
	Time       int64
	Price      int64
	Qty        int64
	BuyOrder   uint64
	SellOrder  uint64
	Buyer      uint64
	Seller     uint64
	TakerSide  market.Side
	MakerOrder uint64
}

func encodeTrade(w *writer, t *Trade) {
	w.str(t.Symbol)
	w.u(t.Seq)
	w.i(t.Time)
	w.i(t.Price)
	w.i(t.Qty)
	w.u(t.BuyOrder)
	w.u(t.SellOrder)
	w.u(t.Buyer)
	w.u(t.Seller)
	w.byte1(byte(t.TakerSide))
}

func decodeTrade(r *reader) *Trade {
	t := &Trade{Symbol: r.sym(), Seq: r.u(), Time: r.i(), Price: r.i(), Qty: r.i(),
		BuyOrder: r.u(), SellOrder: r.u(), Buyer: r.u(), Seller: r.u(), TakerSide: market.Side(r.byte1())}
	if t.TakerSide == market.Buy {
		t.MakerOrder = t.SellOrder
	} else {
		t.MakerOrder = t.BuyOrder
	}
	return t
}

// BookStats is the persisted part of a book besides its orders, and the
// current UTC day's statistics.
type BookStats struct {
	Last     int64
	TradeSeq uint64
	NextSeq  uint64
	DayStart int64 // unix ns of the UTC midnight the day fields describe
	Open     int64
	High     int64
	Low      int64
	Volume   int64
	LastTime int64
}

func encodeBookStats(w *writer, s *BookStats) {
	w.i(s.Last)
	w.u(s.TradeSeq)
	w.u(s.NextSeq)
	w.i(s.DayStart)
	w.i(s.Open)
	w.i(s.High)
	w.i(s.Low)
	w.i(s.Volume)
	w.i(s.LastTime)
}

func decodeBookStats(r *reader) *BookStats {
	return &BookStats{Last: r.i(), TradeSeq: r.u(), NextSeq: r.u(), DayStart: r.i(), Open: r.i(), High: r.i(), Low: r.i(), Volume: r.i(), LastTime: r.i()}
}

func decodeWhole[T any](b []byte, dec func(*reader) T, what string) T {
	r := reader{b: b}
	v := dec(&r)
	if err := r.done(); err != nil {
		panic(fmt.Sprintf("fsm: stored %s: %v", what, err))
	}
	return v
}

// encodeWith encodes v into a pooled scratch buffer and returns an exact
// copy: one allocation per record (it is kept, in a layer and then the
// file's pages) instead of one per growth of a buffer from nothing.
func encodeWith[T any](v T, enc func(*writer, T)) []byte {
	var out []byte
	withEncoding(v, enc, func(b []byte) { out = bytes.Clone(b) })
	return out
}

// withEncoding encodes v into a pooled scratch buffer and hands it to
// use, which must not keep it.
func withEncoding[T any](v T, enc func(*writer, T), use func([]byte)) {
	w := scratch.Get().(*writer)
	enc(w, v)
	use(w.b)
	if cap(w.b) <= maxScratch {
		w.b = w.b[:0]
		scratch.Put(w)
	}
}

// scratch holds encoding buffers; one that grew past maxScratch (a large
// record) is dropped instead of kept.
var scratch = sync.Pool{New: func() any { return &writer{b: make([]byte, 0, 256)} }}

const maxScratch = 64 << 10
