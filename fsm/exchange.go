package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// Exchange rejections (business errors returned as values).
var (
	ErrNotOwner = errors.New("order belongs to another trader")
)

// Exchange buckets: inside bMarket and bTrader.
var (
	bInstruments = []byte("instruments")   // market: symbol -> instrument
	bOrders      = []byte("orders")        // market: order id -> order (finished orders)
	bOpen        = []byte("open")          // market: order id -> order (active orders)
	bBooks       = []byte("books")         // market: symbol -> book stats
	bTrades      = []byte("trade_chunks")  // market: symbol 0 chunk -> trades (chunklog.go)
	bClientIDs   = []byte("client_ids")    // trader: account | client id -> order id
	bOrderIndex  = []byte("order_index")   // trader: account | chunk -> order ids, placement order (chunklog.go)
	bPositions   = []byte("positions")     // trader: account | symbol -> position
	bLedger      = []byte("ledger_chunks") // trader: account | chunk -> statement entries (chunklog.go)

	kNextOrder = []byte("next_order_id")
	// kOpenRecords in meta marks a state whose open set holds the active
	// orders' records (session 12); before, it held their symbols and
	// every record was in bOrders (migrateOpenSet converts).
	kOpenRecords = []byte("open_set_records")
)

// maxExpirePerCommand bounds the DAY-order expiry sweep done by each order
// command; orders past their day never trade meanwhile (matching checks).
const maxExpirePerCommand = 8

func acctKey(acct uint64, rest []byte) []byte {
	k := make([]byte, 8, 8+len(rest))
	binary.BigEndian.PutUint64(k, acct)
	return append(k, rest...)
}

// acctSeqKey is acctKey(acct, u64key(seq)) in one allocation.
func acctSeqKey(acct, seq uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, acct)
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

func tradeKey(sym string, seq uint64) []byte {
	k := make([]byte, len(sym)+9)
	copy(k, sym)
	binary.BigEndian.PutUint64(k[len(sym)+1:], seq)
	return k
}

// loadBooks rebuilds every in-memory book from the instrument table, the
// book stats and the open-order set.
func loadBooks(tx *stx) (map[string]*market.Book, error) {
	mb := tx.Bucket(bMarket)
	books := map[string]*market.Book{}
	err := mb.Bucket(bInstruments).ForEach(func(k, v []byte) error {
		in := decodeWhole(v, decodeInstrument, "instrument")
		b := market.NewBook(in.Symbol, in.RefPrice)
		if sv := mb.Bucket(bBooks).Get(k); sv != nil {
			st := decodeWhole(sv, decodeBookStats, "book stats")
			b.Last, b.TradeSeq, b.NextSeq = st.Last, st.TradeSeq, st.NextSeq
		}
		books[in.Symbol] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	var open []*market.Order
	err = mb.Bucket(bOpen).ForEach(func(_, v []byte) error {
		open = append(open, decodeWhole(v, decodeOrder, "order"))
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(open, func(a, b *market.Order) int {
		if c := strings.Compare(a.Symbol, b.Symbol); c != 0 {
			return c
		}
		return int(a.Seq) - int(b.Seq)
	})
	for _, o := range open {
		b, ok := books[o.Symbol]
		if !ok {
			return nil, fmt.Errorf("%w: order %d for unknown symbol %s", ErrCorrupt, o.ID, o.Symbol)
		}
		if err := b.Restore(o); err != nil {
			return nil, err
		}
	}
	return books, nil
}

// exch holds one command's working set: accounts and positions are loaded
// once, changed in memory and written back in key order at the end.
type exch struct {
	f     *FSM
	tx    *stx
	now   int64
	accts map[uint64]*trader.Account
	pos   map[posKey]*trader.Position
	// fresh is the order this command creates until it is stored as open:
	// an order that never rested was never in the open set, so finishing
	// it needs no delete there (which would cost a tombstone in the layer
	// and a B+tree search at the checkpoint).
	fresh uint64
}

// newExch starts a command's working set. There is one per FSM, reset
// for each command (its maps keep their room): the apply loop runs one
// command at a time, and no command holds two.
func (f *FSM) newExch(tx *stx, now int64) *exch {
	x := f.x
	if x == nil {
		x = &exch{f: f, accts: map[uint64]*trader.Account{}, pos: map[posKey]*trader.Position{}}
		f.x = x
	}
	clear(x.accts)
	clear(x.pos)
	x.tx, x.now, x.fresh = tx, now, 0
	return x
}

func (x *exch) account(id uint64) (*trader.Account, bool) {
	if a, ok := x.accts[id]; ok {
		return a, true
	}
	a, ok := x.f.hot.account(x.tx, id)
	if ok {
		x.accts[id] = a
	}
	return a, ok
}

func (x *exch) position(acct uint64, sym string) *trader.Position {
	k := posKey{acct, sym}
	if p, ok := x.pos[k]; ok {
		return p
	}
	p := x.f.hot.position(x.tx, acct, sym)
	x.pos[k] = p
	return p
}

// entry appends a statement line for acct, with balances after it.
func (x *exch) entry(acct uint64, e trader.Entry) {
	a, _ := x.account(acct)
	e.Time = x.now
	e.CashAfter = int64(a.Cash)
	if e.Symbol != "" {
		e.SharesAfter = x.position(acct, e.Symbol).Qty
	}
	lb := x.tx.Bucket(bTrader).Bucket(bLedger)
	seq, key := x.f.nextSeq(seqLedger, lb, acct)
	e.Seq = seq
	appendLogWith(lb, key, seq, &e, encodeEntry)
}

// indexOrder appends a new order's ID to its trader's order index, a
// chunked log (one key per 32 orders of an account, not one per order).
func (x *exch) indexOrder(b *sbucket, acct, id uint64) {
	seq, key := x.f.nextSeq(seqOrderIndex, b, acct)
	var rec [8]byte
	binary.BigEndian.PutUint64(rec[:], id)
	appendLog(b, key, seq, rec[:])
}

// Per-account sequences kept in the FSM's seq cache.
const (
	seqLedger byte = iota
	seqOrderEvents
	seqOrderIndex
)

type seqKey struct {
	kind byte
	acct uint64
}

// nextSeq allocates the next per-account sequence in b. The last one
// handed out is cached (entries are never deleted from these buckets, so
// the cache always equals what lastSeq would find); the cache is dropped
// whenever the state is reopened, restored or rolled back.
// It also returns the key of the chunk the sequence goes in; the key is
// built once per chunk and shared by its records' appends (a stored
// key's bytes never change, so one slice can name it in every layer).
func (f *FSM) nextSeq(kind byte, b *sbucket, acct uint64) (uint64, []byte) {
	k := seqKey{kind, acct}
	s, ok := f.seqs[k]
	if !ok {
		s.last = lastSeq(b, acct)
	}
	s.last++
	if s.key == nil || chunkStart(s.last) != chunkStart(s.last-1) {
		s.key = acctSeqKey(acct, chunkStart(s.last))
	}
	f.seqs[k] = s
	return s.last, s.key
}

// seqState is a per-account sequence's last value and its chunk's key.
type seqState struct {
	last uint64
	key  []byte
}

// cidWindow is what the state machine knows in memory about an account's
// client-ID keys (account | client ID): every stored key that sorts after
// floor is in keys (sorted). Keys at or below floor are looked up.
//
// Client IDs are never deleted, so this only grows: loaded on first use
// with floor at the account's largest stored key (nothing is stored above
// it) and no keys, then every key applyPlace stores above floor is added.
// The Go client's IDs grow with time, and several clients of one trader
// (or one client's pipelined orders) reach the log slightly out of order,
// so nearly every new ID is either above all of them or among the newest
// few: both are answered here without a lookup through every layer and
// the file. The window is bounded: past maxCIDWindow keys the older half
// is dropped and floor raised to the newest key dropped, which keeps the
// rule (every stored key above floor is in keys).
type cidWindow struct {
	floor []byte
	keys  [][]byte
}

const maxCIDWindow = 64

// known reports whether the window answers for key, and if so whether
// the key is stored.
func (w *cidWindow) known(key []byte) (answered, stored bool) {
	if bytes.Compare(key, w.floor) <= 0 {
		return false, false
	}
	_, found := slices.BinarySearchFunc(w.keys, key, bytes.Compare)
	return true, found
}

// add records a key just stored.
func (w *cidWindow) add(key []byte) {
	if bytes.Compare(key, w.floor) <= 0 {
		return // below the window: looked up anyway
	}
	i, found := slices.BinarySearchFunc(w.keys, key, bytes.Compare)
	if found {
		return
	}
	w.keys = slices.Insert(w.keys, i, key)
	if len(w.keys) > maxCIDWindow {
		drop := len(w.keys) / 2
		w.floor = w.keys[drop-1]
		w.keys = append(w.keys[:0:0], w.keys[drop:]...)
	}
}

// newClientID reports whether key (account | client ID) is certainly not
// stored, so the lookup can be skipped (see cidWindow).
func (f *FSM) newClientID(b *sbucket, acct uint64, key []byte) bool {
	w := f.cids[acct]
	if w == nil {
		w = &cidWindow{}
		if k := lastUnder(b, acct); len(k) > 8 {
			w.floor = bytes.Clone(k)
		}
		f.cids[acct] = w
	}
	answered, stored := w.known(key)
	return answered && !stored
}

// lastSeq is an account's newest sequence number in a chunked log.
func lastSeq(b *sbucket, acct uint64) uint64 { return lastLogSeq(b, u64key(acct)) }

// lastUnder returns the last key under an account prefix, or nil.
func lastUnder(b *sbucket, acct uint64) []byte {
	c := b.Cursor()
	var k []byte
	if acct == math.MaxUint64 {
		k, _ = c.Last()
	} else if k, _ = c.Seek(u64key(acct + 1)); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	if len(k) >= 8 && binary.BigEndian.Uint64(k[:8]) == acct {
		return k
	}
	return nil
}

// flush hands every account and position the command loaded back to the
// hot cache, which writes the changed ones at the end of the entry.
func (x *exch) flush() {
	for _, a := range x.accts {
		x.f.hot.putAccount(a)
	}
	for k, p := range x.pos {
		x.f.hot.putPosition(k.acct, p)
	}
}

// putOrder stores an order's new state: an active order's record in the
// open set, a finished one's in the orders table (and out of the open
// set, if it ever rested there). An order is active from placement until
// it finishes, never again after, so each order is written once per
// state change to one key, and a resting order costs no second key.
func (x *exch) putOrder(o *market.Order) {
	mb := x.tx.Bucket(bMarket)
	id := u64key(o.ID)
	enc := encodeWith(o, encodeOrder) // the record and the event share it
	if o.Status.Active() {
		must(mb.Bucket(bOpen).Put(id, enc))
		if o.ID == x.fresh {
			x.fresh = 0
		}
	} else {
		must(mb.Bucket(bOrders).Put(id, enc))
		if o.ID != x.fresh {
			must(mb.Bucket(bOpen).Delete(id))
		}
	}
	x.orderEvent(o, enc)
}

// orderRecord is an order's stored record, active or finished, or nil.
func orderRecord(mb *sbucket, id []byte) []byte {
	if v := mb.Bucket(bOpen).Get(id); v != nil {
		return v
	}
	return mb.Bucket(bOrders).Get(id)
}

func (x *exch) putBook(b *market.Book) {
	st := x.f.hot.editBookStats(x.tx, b.Symbol)
	st.Last, st.TradeSeq, st.NextSeq = b.Last, b.TradeSeq, b.NextSeq
}

// reserve holds back what an order needs: cash for a buy, shares for a sell.
func (x *exch) reserve(o *market.Order, qty, price int64) error {
	if o.Side == market.Buy {
		a, _ := x.account(o.Account)
		need := trader.Cents(qty * price)
		if need > a.Available() {
			return fmt.Errorf("%w: order needs %s, %s available", trader.ErrInsufficientFunds, need, a.Available())
		}
		a.Reserved += need
		return nil
	}
	p := x.position(o.Account, o.Symbol)
	if qty > p.Available() {
		return fmt.Errorf("%w: order sells %d %s, %d available", trader.ErrInsufficientShares, qty, o.Symbol, p.Available())
	}
	p.Reserved += qty
	return nil
}

// release returns what an order held for qty shares at its reserve price.
func (x *exch) release(o *market.Order, qty int64) {
	if qty == 0 {
		return
	}
	if o.Side == market.Buy {
		a, _ := x.account(o.Account)
		a.Reserved -= trader.Cents(qty * o.ReservePrice())
		return
	}
	x.position(o.Account, o.Symbol).Reserved -= qty
}

// settle books everything an engine outcome did: each fill moves cash and
// shares between the two accounts and goes on the tape and both
// statements; each order that finished releases what it still held.
func (x *exch) settle(b *market.Book, out *market.Outcome) {
	firstSeq := b.TradeSeq - uint64(len(out.Fills))
	trades := x.tx.Bucket(bMarket).Bucket(bTrades)
	for i, fl := range out.Fills {
		buy, sell := fl.Buyer(), fl.Seller()
		notional := fl.Price * fl.Qty
		ba, _ := x.account(buy.Account)
		sa, _ := x.account(sell.Account)
		ba.Cash -= trader.Cents(notional)
		ba.Reserved -= trader.Cents(fl.Qty * buy.ReservePrice())
		if bp := x.position(buy.Account, b.Symbol); bp.Add(fl.Qty, fl.Price) != nil {
			// The book has matched; the fill must be booked. Only the
			// holding cap can refuse a positive quantity, and open buys may
			// legitimately carry a holding past it (the cap is enforced
			// when shares are deposited), so book it past the cap.
			bp.Qty += fl.Qty
			bp.Cost += fl.Qty * fl.Price
		}
		sp := x.position(sell.Account, b.Symbol)
		sp.Reserved -= fl.Qty
		if _, err := sp.Remove(fl.Qty, fl.Price, true); err != nil {
			panic(fmt.Sprintf("fsm: settle sell: %v", err))
		}
		sa.Cash += trader.Cents(notional)
		t := &Trade{Symbol: b.Symbol, Seq: firstSeq + uint64(i) + 1, Time: x.now, Price: fl.Price, Qty: fl.Qty,
			BuyOrder: buy.ID, SellOrder: sell.ID, Buyer: buy.Account, Seller: sell.Account, TakerSide: fl.Taker.Side}
		appendLogWith(trades, tradeKey(b.Symbol, chunkStart(t.Seq)), t.Seq, t, encodeTrade)
		x.entry(buy.Account, trader.Entry{Kind: trader.EntryBuy, Symbol: b.Symbol, Qty: fl.Qty, Price: fl.Price, Cash: -notional, OrderID: buy.ID, TradeSeq: t.Seq})
		x.entry(sell.Account, trader.Entry{Kind: trader.EntrySell, Symbol: b.Symbol, Qty: -fl.Qty, Price: fl.Price, Cash: notional, OrderID: sell.ID, TradeSeq: t.Seq})
		x.dayStats(b.Symbol, fl.Price, fl.Qty)
	}
	for _, o := range out.Touched {
		if !o.Status.Active() {
			x.release(o, o.Remaining())
		}
		x.putOrder(o)
	}
	x.putBook(b)
}

func (x *exch) dayStats(sym string, price, qty int64) {
	st := x.f.hot.editBookStats(x.tx, sym)
	day := market.EndOfUTCDay(x.now) - 86_400_000_000_000
	if st.DayStart != day {
		st.DayStart, st.Open, st.High, st.Low, st.Volume = day, price, price, price, 0
	}
	st.High = max(st.High, price)
	st.Low = min(st.Low, price)
	st.Volume += qty
	st.LastTime = x.now
}

// expire ends DAY orders of b whose day is over, releasing their holds.
func (x *exch) expire(b *market.Book) {
	for _, o := range b.ExpireDue(x.now, maxExpirePerCommand) {
		x.release(o, o.Remaining())
		x.putOrder(o)
	}
}

func (f *FSM) applySetInstrument(tx *stx, c *Command) *Result {
	if err := ValidateSymbol(c.Symbol); err != nil {
		return reject(err)
	}
	if c.Price <= 0 || c.Price > market.MaxPrice {
		return reject(fmt.Errorf("%w: reference price out of range", market.ErrBadPrice))
	}
	in := &market.Instrument{Symbol: c.Symbol, Name: c.Name, RefPrice: c.Price}
	must(tx.Bucket(bMarket).Bucket(bInstruments).Put([]byte(c.Symbol), encodeWith(in, encodeInstrument)))
	if b, ok := f.books[c.Symbol]; ok {
		b.Ref = c.Price
	} else {
		f.books[c.Symbol] = market.NewBook(c.Symbol, c.Price)
		f.publishSymbols()
	}
	return &Result{}
}

// ValidateSymbol checks a symbol's form: 1 to 12 upper-case letters,
// digits, '.' or '-'.
func ValidateSymbol(s string) error {
	if len(s) == 0 || len(s) > 12 {
		return fmt.Errorf("%w: symbol must be 1 to 12 characters", market.ErrBadInstrument)
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return fmt.Errorf("%w: symbol %q may hold only A-Z, 0-9, '.' and '-'", market.ErrBadInstrument, s)
		}
	}
	return nil
}

func (f *FSM) book(sym string) (*market.Book, error) {
	b, ok := f.books[sym]
	if !ok {
		return nil, fmt.Errorf("%w: %q", market.ErrUnknownSymbol, sym)
	}
	return b, nil
}

func (f *FSM) applyShares(tx *stx, c *Command) *Result {
	b, err := f.book(c.Symbol)
	if err != nil {
		return reject(err)
	}
	if c.Qty <= 0 || c.Qty > trader.MaxShares {
		return reject(fmt.Errorf("%w: quantity must be between 1 and %d", market.ErrBadQuantity, int64(trader.MaxShares)))
	}
	x := f.newExch(tx, c.Time)
	if _, ok := x.account(c.Account); !ok {
		return reject(fmt.Errorf("%w: %d", ErrUnknownAccount, c.Account))
	}
	p := x.position(c.Account, c.Symbol)
	price := b.Reference()
	if c.Type == TypeDepositShares {
		if err := p.Add(c.Qty, price); err != nil {
			return reject(err)
		}
		x.entry(c.Account, trader.Entry{Kind: trader.EntryShareDeposit, Symbol: c.Symbol, Qty: c.Qty, Price: price})
	} else {
		if c.Qty > p.Available() {
			return reject(fmt.Errorf("%w: withdraw %d %s but only %d available", trader.ErrInsufficientShares, c.Qty, c.Symbol, p.Available()))
		}
		if _, err := p.Remove(c.Qty, price, false); err != nil {
			return reject(err)
		}
		x.entry(c.Account, trader.Entry{Kind: trader.EntryShareWithdrawal, Symbol: c.Symbol, Qty: -c.Qty, Price: price})
	}
	x.flush()
	cp := *p
	return &Result{Position: &cp}
}

func (f *FSM) applyPlace(tx *stx, c *Command) *Result {
	tb := tx.Bucket(bTrader)
	var cidKey []byte
	if c.ClientID != "" {
		cidKey = acctKey(c.Account, []byte(c.ClientID))
		cids := tb.Bucket(bClientIDs)
		if !f.newClientID(cids, c.Account, cidKey) {
			if idb := cids.Get(cidKey); idb != nil {
				o := f.loadOrder(tx, binary.BigEndian.Uint64(idb))
				return &Result{Order: o, Replay: true, Code: o.RejectCode, Message: rejectMessage(o)}
			}
		}
	}
	x := f.newExch(tx, c.Time)
	if _, ok := x.account(c.Account); !ok {
		return reject(fmt.Errorf("%w: %d", ErrUnknownAccount, c.Account))
	}
	meta := tx.Bucket(bMeta)
	id := getU64(meta, kNextOrder) + 1
	putU64(meta, kNextOrder, id)
	o := &market.Order{
		ID: id, ClientID: c.ClientID, Account: c.Account, Symbol: c.Symbol,
		Side: market.Side(c.Side), Type: market.Type(c.OrdType), TIF: market.TIF(c.TIF), PostOnly: c.PostOnly,
		Qty: c.Qty, Limit: c.Limit, Stop: c.Stop, Created: c.Time, Updated: c.Time,
	}
	x.fresh = id
	if cidKey != nil {
		must(tb.Bucket(bClientIDs).Put(cidKey, u64key(id)))
		// Only a loaded window may learn it: one made up without the
		// stored keys could hide a larger one, and with it a repeat.
		if w := f.cids[c.Account]; w != nil {
			w.add(cidKey)
		}
	}
	x.indexOrder(tb.Bucket(bOrderIndex), c.Account, id)

	rejectOrder := func(err error) *Result {
		res := reject(err)
		o.Status, o.Reason, o.RejectCode = market.Rejected, err.Error(), res.Code
		x.putOrder(o)
		res.Order = o
		return res
	}
	b, err := f.book(c.Symbol)
	if err != nil {
		return rejectOrder(err)
	}
	if err := market.Validate(o); err != nil {
		return rejectOrder(err)
	}
	if err := b.Prepare(o); err != nil {
		return rejectOrder(err)
	}
	if err := stopLimitCollar(tx, b, o, o.Limit); err != nil {
		return rejectOrder(err)
	}
	if err := x.reserve(o, o.Qty, o.ReservePrice()); err != nil {
		return rejectOrder(err)
	}
	out, err := b.Submit(o, c.Time)
	if err != nil {
		x.release(o, o.Qty)
		return rejectOrder(err)
	}
	x.settle(b, out)
	x.expire(b)
	x.flush()
	cp := *o // the live order belongs to the book; hand out a copy
	return &Result{Order: &cp}
}

func rejectMessage(o *market.Order) string {
	if o.Status == market.Rejected {
		return o.Reason
	}
	return ""
}

func (f *FSM) loadOrder(tx *stx, id uint64) *market.Order {
	v := orderRecord(tx.Bucket(bMarket), u64key(id))
	if v == nil {
		return nil
	}
	o := decodeWhole(v, decodeOrder, "order")
	if b, ok := f.books[o.Symbol]; ok {
		if live, ok := b.Order(id); ok {
			cp := *live
			return &cp
		}
	}
	return o
}

// ownOpenOrder finds an order the actor may change. An open order is in
// exactly one in-memory book, so it is found there without reading the
// state file; only orders that are not open are loaded, to say why. The
// loop ranges over a map, the one place Apply does: at most one book can
// hold the order, so the order of the search cannot change the outcome.
func (f *FSM) ownOpenOrder(tx *stx, c *Command) (*market.Book, *market.Order, error) {
	for _, b := range f.books {
		if live, ok := b.Order(c.OrderID); ok {
			if live.Account != c.Account {
				return nil, nil, fmt.Errorf("%w: order %d", ErrNotOwner, c.OrderID)
			}
			return b, live, nil
		}
	}
	o := f.loadOrder(tx, c.OrderID)
	switch {
	case o == nil:
		return nil, nil, fmt.Errorf("%w: %d", market.ErrUnknownOrder, c.OrderID)
	case o.Account != c.Account:
		return nil, nil, fmt.Errorf("%w: order %d", ErrNotOwner, c.OrderID)
	case !o.Status.Active():
		return nil, nil, fmt.Errorf("%w: order %d is %s", market.ErrOrderDone, c.OrderID, o.Status)
	}
	b, err := f.book(o.Symbol)
	if err != nil {
		return nil, nil, err
	}
	live, ok := b.Order(o.ID)
	if !ok {
		panic(fmt.Sprintf("fsm: open order %d missing from the %s book", o.ID, o.Symbol))
	}
	return b, live, nil
}

func (f *FSM) applyCancel(tx *stx, c *Command) *Result {
	b, o, err := f.ownOpenOrder(tx, c)
	if err != nil {
		return reject(err)
	}
	x := f.newExch(tx, c.Time)
	expired := o.ExpiresAt != 0 && c.Time >= o.ExpiresAt
	if _, err := b.Cancel(o.ID, c.Time, "cancelled by trader"); err != nil {
		panic(fmt.Sprintf("fsm: cancel of open order: %v", err))
	}
	if expired { // its day ended before the cancel arrived
		o.Status, o.Reason = market.Expired, "day order expired"
	}
	x.release(o, o.Remaining())
	x.putOrder(o)
	x.expire(b)
	x.flush()
	cp := *o
	if expired {
		res := reject(fmt.Errorf("%w: order %d expired at the end of its day", market.ErrOrderDone, o.ID))
		res.Order = &cp
		return res
	}
	return &Result{Order: &cp}
}

func (f *FSM) applyAmend(tx *stx, c *Command) *Result {
	b, o, err := f.ownOpenOrder(tx, c)
	if err != nil {
		return reject(err)
	}
	newQty, newLimit := c.Qty, c.Limit
	if newQty == 0 {
		newQty = o.Qty
	}
	if newLimit == 0 {
		newLimit = o.Limit
	}
	if newQty <= o.Filled || newQty > market.MaxQuantity {
		return reject(fmt.Errorf("%w: new quantity must exceed the %d already filled and be at most %d", market.ErrBadQuantity, o.Filled, market.MaxQuantity))
	}
	if newLimit != o.Limit && o.Type != market.Limit && o.Type != market.StopLimit {
		return reject(fmt.Errorf("%w: only limit and stop-limit orders have a limit price to amend", market.ErrBadOrder))
	}
	if newLimit != o.Limit {
		if err := stopLimitCollar(tx, b, o, newLimit); err != nil {
			return reject(err)
		}
	}
	x := f.newExch(tx, c.Time)
	// Swap the hold from the old remainder to the new one first.
	oldRem := o.Remaining()
	x.release(o, oldRem)
	probe := *o
	probe.Qty, probe.Limit = newQty, newLimit
	if err := x.reserve(&probe, probe.Remaining(), probe.ReservePrice()); err != nil {
		return reject(err) // x is not flushed: nothing changes
	}
	out, err := b.Amend(o.ID, newQty, newLimit, c.Time)
	if err != nil {
		return reject(err)
	}
	x.settle(b, out)
	x.expire(b)
	x.flush()
	cp := *o
	return &Result{Order: &cp}
}
