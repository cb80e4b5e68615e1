package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// Instruments lists every instrument in symbol order.
func (v *View) Instruments() []*market.Instrument {
	var out []*market.Instrument
	_ = v.tx.Bucket(bMarket).Bucket(bInstruments).ForEach(func(_, val []byte) error {
		out = append(out, decodeWhole(val, decodeInstrument, "instrument"))
		return nil
	})
	return out
}

// Instrument returns one instrument.
func (v *View) Instrument(sym string) (*market.Instrument, bool) {
	val := v.tx.Bucket(bMarket).Bucket(bInstruments).Get([]byte(sym))
	if val == nil {
		return nil, false
	}
	return decodeWhole(val, decodeInstrument, "instrument"), true
}

// BookStats returns a symbol's last price, trade sequence and day figures.
func (v *View) BookStats(sym string) (*BookStats, bool) {
	val := v.tx.Bucket(bMarket).Bucket(bBooks).Get([]byte(sym))
	if val == nil {
		return &BookStats{}, false
	}
	return decodeWhole(val, decodeBookStats, "book stats"), true
}

// Order returns an order by ID as stored.
func (v *View) Order(id uint64) (*market.Order, bool) {
	val := orderRecord(v.tx.Bucket(bMarket), u64key(id))
	if val == nil {
		return nil, false
	}
	return decodeWhole(val, decodeOrder, "order"), true
}

// OrderByClientID finds an account's order by its client order ID.
func (v *View) OrderByClientID(acct uint64, clientID string) (*market.Order, bool) {
	idb := v.tx.Bucket(bTrader).Bucket(bClientIDs).Get(acctKey(acct, []byte(clientID)))
	if idb == nil {
		return nil, false
	}
	return v.Order(binary.BigEndian.Uint64(idb))
}

// Orders lists an account's orders, newest first, optionally only open
// ones or one symbol's, at most limit (0: no limit).
func (v *View) Orders(acct uint64, openOnly bool, symbol string, limit int) []*market.Order {
	var out []*market.Order
	scanLogBack(v.tx.Bucket(bTrader).Bucket(bOrderIndex), u64key(acct), func(_ uint64, rec []byte) bool {
		if len(rec) != 8 {
			panic(fmt.Sprintf("fsm: order index of account %d: %v: record of %d bytes", acct, ErrCorrupt, len(rec)))
		}
		o, ok := v.Order(binary.BigEndian.Uint64(rec))
		if !ok || (openOnly && !o.Status.Active()) || (symbol != "" && o.Symbol != symbol) {
			return true
		}
		out = append(out, o)
		return limit <= 0 || len(out) < limit
	})
	return out
}

// Positions lists an account's positions in symbol order.
func (v *View) Positions(acct uint64) []*trader.Position {
	var out []*trader.Position
	c := v.tx.Bucket(bTrader).Bucket(bPositions).Cursor()
	prefix := u64key(acct)
	for k, val := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, val = c.Next() {
		out = append(out, decodeWhole(val, decodePosition, "position"))
	}
	return out
}

// Position returns one holding (zero when none).
func (v *View) Position(acct uint64, sym string) *trader.Position {
	val := v.tx.Bucket(bTrader).Bucket(bPositions).Get(acctKey(acct, []byte(sym)))
	if val == nil {
		return &trader.Position{Symbol: sym}
	}
	return decodeWhole(val, decodePosition, "position")
}

// Statement lists an account's cash and share movements, oldest first,
// starting after sequence `after`, at most limit (0: no limit).
func (v *View) Statement(acct uint64, after uint64, limit int) []*trader.Entry {
	var out []*trader.Entry
	scanLog(v.tx.Bucket(bTrader).Bucket(bLedger), u64key(acct), after+1, func(_ uint64, rec []byte) bool {
		out = append(out, decodeWhole(rec, decodeEntry, "statement entry"))
		return limit <= 0 || len(out) < limit
	})
	return out
}

// Trades returns a symbol's trades with sequence in [from, to], oldest
// first, at most limit (0: no limit). to = 0 means up to the newest.
func (v *View) Trades(sym string, from, to uint64, limit int) []*Trade {
	var out []*Trade
	scanLog(v.tx.Bucket(bMarket).Bucket(bTrades), append([]byte(sym), 0), from, func(seq uint64, rec []byte) bool {
		if to != 0 && seq > to {
			return false
		}
		out = append(out, decodeWhole(rec, decodeTrade, "trade"))
		return limit <= 0 || len(out) < limit
	})
	return out
}

// RecentTrades returns up to n of a symbol's newest trades, newest first.
func (v *View) RecentTrades(sym string, n int) []*Trade {
	var out []*Trade
	if n <= 0 {
		return nil
	}
	scanLogBack(v.tx.Bucket(bMarket).Bucket(bTrades), append([]byte(sym), 0), func(_ uint64, rec []byte) bool {
		out = append(out, decodeWhole(rec, decodeTrade, "trade"))
		return len(out) < n
	})
	return out
}

// Totals sums cash over all accounts and shares per symbol over all
// positions: what conservation checks compare with deposits minus
// withdrawals.
func (v *View) Totals() (cash int64, reserved int64, shares map[string]int64) {
	shares = map[string]int64{}
	_ = v.tx.Bucket(bTrader).Bucket(bAccounts).ForEach(func(_, val []byte) error {
		a := decodeWhole(val, decodeAccount, "account")
		cash += int64(a.Cash)
		reserved += int64(a.Reserved)
		return nil
	})
	_ = v.tx.Bucket(bTrader).Bucket(bPositions).ForEach(func(_, val []byte) error {
		p := decodeWhole(val, decodePosition, "position")
		shares[p.Symbol] += p.Qty
		return nil
	})
	return cash, reserved, shares
}

// OpenOrders lists every active order in ID order (invariant checks).
func (v *View) OpenOrders() []*market.Order {
	var out []*market.Order
	_ = v.tx.Bucket(bMarket).Bucket(bOpen).ForEach(func(_, val []byte) error {
		out = append(out, decodeWhole(val, decodeOrder, "order"))
		return nil
	})
	return out
}

// BookSnapshot is a consistent copy of one book's top levels.
type BookSnapshot struct {
	Symbol   string
	Bids     []market.Level
	Asks     []market.Level
	Last     int64
	Ref      int64
	TradeSeq uint64
	Crossed  bool
}

// Book returns up to depth aggregated levels per side of a symbol's book,
// from the in-memory book (as of the last applied batch).
func (f *FSM) Book(sym string, depth int) (*BookSnapshot, bool) {
	f.bookMu.Lock()
	defer f.bookMu.Unlock()
	b, ok := f.books[sym]
	if !ok {
		return nil, false
	}
	bids, asks := b.Depth(depth)
	return &BookSnapshot{Symbol: sym, Bids: bids, Asks: asks, Last: b.Last, Ref: b.Ref, TradeSeq: b.TradeSeq, Crossed: b.Crossed()}, true
}
