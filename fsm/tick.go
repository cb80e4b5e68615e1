package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// ErrStaleTick rejects a tick whose sequence is not the next one: a repeat,
// or a tick from a leader that has since been deposed.
var ErrStaleTick = errors.New("stale tick")

// House account funding: what the market maker starts with. It enters the
// books as ordinary deposits, so conservation checks count it.
const (
	HouseUsername   = "_house"
	HouseCash       = 1_000_000_000_00 // $1,000,000,000.00
	HouseSharesEach = 1_000_000
)

var (
	kTickSeq    = []byte("tick_seq")
	kTickTime   = []byte("tick_time")
	kFeedKind   = []byte("feed_kind")
	kFeedState  = []byte("feed_state")
	kHouse      = []byte("house_account")
	kMMPrefix   = "mm_orders/" // + symbol -> bid id | ask id
	bucketMeta  = bMeta
	houseFunded = []byte("house_funded/") // + symbol -> 1
)

// FeedInfo is the Market Engine's replicated progress.
type FeedInfo struct {
	Seq   uint64
	Time  int64 // leader-stamped time of the last tick
	Kind  string
	State []byte
	House uint64 // house account id, 0 before market making started
}

// Feed returns the Market Engine's replicated progress.
func (v *View) Feed() FeedInfo {
	m := v.tx.Bucket(bucketMeta)
	return FeedInfo{
		Seq: getU64(m, kTickSeq), Time: int64(getU64(m, kTickTime)),
		Kind: string(m.Get(kFeedKind)), State: append([]byte(nil), m.Get(kFeedState)...),
		House: getU64(m, kHouse),
	}
}

func (f *FSM) applyTick(tx *stx, c *Command) *Result {
	m := tx.Bucket(bMeta)
	if last := getU64(m, kTickSeq); c.TickSeq != last+1 {
		return reject(fmt.Errorf("%w: tick %d, expected %d", ErrStaleTick, c.TickSeq, last+1))
	}
	ins := tx.Bucket(bMarket).Bucket(bInstruments)
	for _, p := range c.Prices {
		v := ins.Get([]byte(p.Symbol))
		if v == nil || p.Price <= 0 || p.Price > market.MaxPrice {
			continue // the leader validated the feed; never let a bad row in
		}
		in := decodeWhole(v, decodeInstrument, "instrument")
		in.RefPrice = p.Price
		must(ins.Put([]byte(p.Symbol), encodeWith(in, encodeInstrument)))
		f.books[p.Symbol].Ref = p.Price
	}
	putU64(m, kTickSeq, c.TickSeq)
	putU64(m, kTickTime, uint64(c.Time))
	must(m.Put(kFeedKind, []byte(c.FeedKind)))
	must(m.Put(kFeedState, c.FeedState))
	if c.MMSize > 0 && c.MMSize <= market.MaxQuantity && c.MMSpread > 0 {
		f.makeMarkets(tx, c)
	}
	// Sweep DAY orders whose day is over, so they stop holding funds even
	// in a symbol no one is trading.
	x := f.newExch(tx, c.Time)
	for _, in := range (&View{tx: tx}).Instruments() {
		x.expire(f.books[in.Symbol])
	}
	x.flush()
	f.recordQuotes(tx, c.TickSeq, c.Time)
	return &Result{}
}

// house returns the house account, creating and funding it on first use;
// each symbol's share inventory is funded the first time it is quoted.
func (f *FSM) house(tx *stx, now int64) uint64 {
	m := tx.Bucket(bMeta)
	id := getU64(m, kHouse)
	x := f.newExch(tx, now)
	if id == 0 {
		id = getU64(m, kNextAccount) + 1
		putU64(m, kNextAccount, id)
		putU64(m, kHouse, id)
		f.houseAcct, f.houseKnown = id, true
		a := &trader.Account{ID: id, Username: HouseUsername, Name: "HATS market maker", CreatedAt: now, Cash: HouseCash}
		x.accts[id] = a
		x.entry(id, trader.Entry{Kind: trader.EntryDeposit, Cash: HouseCash})
	}
	for _, in := range (&View{tx: tx}).Instruments() {
		k := append(append([]byte(nil), houseFunded...), in.Symbol...)
		if m.Get(k) != nil {
			continue
		}
		must(m.Put(k, []byte{1}))
		p := x.position(id, in.Symbol)
		if err := p.Add(HouseSharesEach, in.RefPrice); err != nil {
			panic(fmt.Sprintf("fsm: fund house: %v", err))
		}
		x.entry(id, trader.Entry{Kind: trader.EntryShareDeposit, Symbol: in.Symbol, Qty: HouseSharesEach, Price: in.RefPrice})
	}
	x.flush()
	return id
}

// makeMarkets keeps one house bid and one house ask around each symbol's
// reference price. An existing house order is amended in place (the same
// order ID, so the order table does not grow with every tick); a finished
// one is replaced. Quotes that the house cannot fund or that fall outside
// the collar are skipped for this tick.
func (f *FSM) makeMarkets(tx *stx, c *Command) {
	house := f.house(tx, c.Time)
	m := tx.Bucket(bMeta)
	for _, in := range (&View{tx: tx}).Instruments() {
		b := f.books[in.Symbol]
		bid, ask, ok := market.MarketMakerQuotes(b.Ref, c.MMSpread)
		if !ok {
			continue
		}
		key := []byte(kMMPrefix + in.Symbol)
		ids := make([]byte, 16)
		copy(ids, m.Get(key))
		for i, q := range []struct {
			side  market.Side
			price int64
		}{{market.Buy, bid}, {market.Sell, ask}} {
			prev := binary.BigEndian.Uint64(ids[i*8:])
			if o, live := b.Order(prev); prev != 0 && live && o.Account == house {
				if o.Limit == q.price && o.Remaining() == c.MMSize {
					continue
				}
				f.applyAmend(tx, &Command{Type: TypeAmendOrder, Time: c.Time, Account: house, OrderID: prev, Qty: o.Filled + c.MMSize, Limit: q.price})
				continue
			}
			probe := &market.Order{Side: q.side, Type: market.Limit, TIF: market.GTC, Qty: c.MMSize, Limit: q.price, Symbol: in.Symbol, Account: house}
			if b.Prepare(probe) != nil || !f.houseCanFund(tx, house, probe) {
				continue
			}
			res := f.applyPlace(tx, &Command{Type: TypePlaceOrder, Time: c.Time, Account: house, Symbol: in.Symbol,
				Side: uint8(q.side), OrdType: uint8(market.Limit), TIF: uint8(market.GTC), Qty: c.MMSize, Limit: q.price})
			if res.Order != nil && res.Code == CodeOK {
				binary.BigEndian.PutUint64(ids[i*8:], res.Order.ID)
			}
		}
		must(m.Put(key, ids))
	}
}

func (f *FSM) houseCanFund(tx *stx, house uint64, o *market.Order) bool {
	a, ok := f.hot.account(tx, house)
	if !ok {
		return false
	}
	if o.Side == market.Buy {
		return trader.Cents(o.Qty*o.Limit) <= a.Available()
	}
	return f.hot.position(tx, house, o.Symbol).Available() >= o.Qty
}
