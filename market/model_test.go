package market

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Differential test: a seeded random stream of commands runs through the
// real Book and through refBook, a deliberately naive reference model that
// keeps every order in a plain slice and finds each match by scanning for
// the best (price, seq) opposite order. After every step fills, every
// order's state, the aggregated depth and the book counters must agree, and
// the engine must satisfy its invariants.
//
// HATS_MARKET_SEED=N replays one seed; HATS_MARKET_LONG=1 runs many more.

// ---------------------------------------------------------------- model

type refOrder struct {
	ID, Account uint64
	Side        Side
	Type        Type
	TIF         TIF
	PostOnly    bool
	Qty, Filled int64
	Limit, Stop int64
	Cap         int64
	Status      Status
	Triggered   bool
	ExpiresAt   int64
	Seq         uint64

	resting bool // in the book (a limit order, or a triggered stop-limit)
	waiting bool // a stop waiting for its trigger
}

func (o *refOrder) remaining() int64 { return o.Qty - o.Filled }

func (o *refOrder) isStop() bool { return o.Type == Stop || o.Type == StopLimit }

func (o *refOrder) hasLimit() bool { return o.Type == Limit || o.Type == StopLimit }

// bound is the worst price the order accepts when it takes.
func (o *refOrder) bound() int64 {
	if o.hasLimit() {
		return o.Limit
	}
	return o.Cap
}

type refFill struct {
	maker, taker uint64
	price, qty   int64
}

type refBook struct {
	ref, last int64
	tradeSeq  uint64
	nextSeq   uint64
	orders    []*refOrder // every accepted order, in entry order
	live      []*refOrder // the ones resting or waiting, in entry order
}

// prune drops finished orders from the live list (order kept).
func (m *refBook) prune() {
	m.live = slices.DeleteFunc(m.live, func(o *refOrder) bool { return !o.resting && !o.waiting })
}

const refDayNs = 86_400 * 1_000_000_000

func (m *refBook) reference() int64 {
	if m.last > 0 {
		return m.last
	}
	return m.ref
}

func (m *refBook) find(id uint64) *refOrder {
	for _, o := range m.live {
		if o.ID == id && (o.resting || o.waiting) {
			return o
		}
	}
	return nil
}

func isExpired(o *refOrder, now int64) bool { return o.TIF == DAY && now >= o.ExpiresAt }

// acceptablePrice: a buyer takes at or under its bound, a seller at or over.
func acceptablePrice(side Side, bound, price int64) bool {
	if side == Buy {
		return price <= bound
	}
	return price >= bound
}

// bestOpposite scans for the opposite resting order with the best price,
// then the lowest Seq.
func (m *refBook) bestOpposite(side Side) *refOrder {
	var best *refOrder
	for _, o := range m.live {
		if !o.resting || o.Side == side {
			continue
		}
		switch {
		case best == nil:
			best = o
		case o.Limit != best.Limit:
			if (o.Side == Sell) == (o.Limit < best.Limit) {
				best = o
			}
		case o.Seq < best.Seq:
			best = o
		}
	}
	return best
}

// wouldTake: any opposite resting order at a price the limit accepts.
func (m *refBook) wouldTake(side Side, limit int64) bool {
	b := m.bestOpposite(side)
	return b != nil && acceptablePrice(side, limit, b.Limit)
}

// fillable: what other traders' live resting orders offer within bound.
func (m *refBook) fillable(t *refOrder, now int64) int64 {
	var n int64
	for _, o := range m.live {
		if o.resting && o.Side != t.Side && o.Account != t.Account && !isExpired(o, now) && acceptablePrice(t.Side, t.bound(), o.Limit) {
			n += o.remaining()
		}
	}
	return n
}

func (m *refBook) triggered(o *refOrder) bool {
	if m.last == 0 {
		return false
	}
	if o.Side == Buy {
		return m.last >= o.Stop
	}
	return m.last <= o.Stop
}

func refValidate(o *refOrder) error {
	if o.Side != Buy && o.Side != Sell {
		return ErrBadOrder
	}
	if o.Qty <= 0 || o.Qty > MaxQuantity {
		return ErrBadQuantity
	}
	badPrice := func(p int64) bool { return p <= 0 || p > MaxPrice }
	switch o.Type {
	case Market:
		if o.Limit != 0 || o.Stop != 0 || o.PostOnly {
			return ErrBadOrder
		}
	case Limit:
		if badPrice(o.Limit) {
			return ErrBadPrice
		}
		if o.Stop != 0 {
			return ErrBadOrder
		}
	case Stop:
		if badPrice(o.Stop) {
			return ErrBadPrice
		}
		if o.PostOnly {
			return ErrBadOrder
		}
	case StopLimit:
		if badPrice(o.Stop) || badPrice(o.Limit) {
			return ErrBadPrice
		}
	default:
		return ErrBadOrder
	}
	switch o.TIF {
	case GTC, DAY:
		if o.Type == Market {
			return ErrBadOrder
		}
	case IOC, FOK:
		if o.PostOnly {
			return ErrBadOrder
		}
	default:
		return ErrBadOrder
	}
	return nil
}

func collar(ref int64) (low, high int64) {
	d := ref / 10 // 10%
	return max(ref-d, 1), ref + d
}

func (m *refBook) submit(o *refOrder, now int64) ([]refFill, error) {
	if err := refValidate(o); err != nil {
		return nil, err
	}
	ref := m.reference()
	if o.Type == Stop {
		ref = o.Stop
	}
	low, high := collar(ref)
	switch o.Type {
	case Market, Stop:
		o.Cap = map[Side]int64{Buy: high, Sell: low}[o.Side]
	case Limit:
		if o.Side == Buy && o.Limit > high || o.Side == Sell && o.Limit < low {
			return nil, ErrBeyondCollar
		}
	}
	if o.PostOnly && m.wouldTake(o.Side, o.Limit) {
		return nil, ErrWouldTake
	}
	waiting := o.isStop() && !m.triggered(o)
	if !waiting && o.TIF == FOK && m.fillable(o, now) < o.Qty {
		return nil, ErrCannotFill
	}
	m.nextSeq++
	o.Status, o.Seq = Open, m.nextSeq
	if o.TIF == DAY {
		o.ExpiresAt = (now/refDayNs + 1) * refDayNs
	}
	m.orders = append(m.orders, o)
	m.live = append(m.live, o)
	if waiting {
		o.waiting = true
		return nil, nil
	}
	o.Triggered = o.isStop()
	fills := m.take(o, now)
	return append(fills, m.fireStops(now)...), nil
}

func (m *refBook) take(t *refOrder, now int64) []refFill {
	var fills []refFill
	for t.remaining() > 0 {
		mk := m.bestOpposite(t.Side)
		if mk == nil || !acceptablePrice(t.Side, t.bound(), mk.Limit) {
			break
		}
		if isExpired(mk, now) {
			mk.resting, mk.Status = false, Expired
			continue
		}
		if mk.Account == t.Account {
			mk.resting, mk.Status = false, Cancelled
			continue
		}
		q := min(t.remaining(), mk.remaining())
		mk.Filled += q
		t.Filled += q
		mk.Status = PartiallyFilled
		if mk.remaining() == 0 {
			mk.Status, mk.resting = Filled, false
		}
		m.last = mk.Limit
		m.tradeSeq++
		fills = append(fills, refFill{mk.ID, t.ID, mk.Limit, q})
	}
	switch {
	case t.remaining() == 0:
		t.Status = Filled
	case t.hasLimit() && (t.TIF == GTC || t.TIF == DAY):
		if t.Filled > 0 {
			t.Status = PartiallyFilled
		}
		t.resting = true
	default:
		t.Status = Cancelled
	}
	return fills
}

// fireStops runs waiting stops whose trigger the last price reached, the
// oldest (lowest Seq) first, rescanning after each.
func (m *refBook) fireStops(now int64) []refFill {
	var fills []refFill
	for {
		var s *refOrder
		for _, o := range m.live {
			if o.waiting && m.triggered(o) && (s == nil || o.Seq < s.Seq) {
				s = o
			}
		}
		if s == nil {
			return fills
		}
		s.waiting, s.Triggered = false, true
		if isExpired(s, now) {
			s.Status = Expired
			continue
		}
		m.nextSeq++
		s.Seq = m.nextSeq
		if s.TIF == FOK && m.fillable(s, now) < s.remaining() || s.PostOnly && m.wouldTake(s.Side, s.Limit) {
			s.Status = Cancelled
			continue
		}
		fills = append(fills, m.take(s, now)...)
	}
}

func (m *refBook) cancel(id uint64) error {
	o := m.find(id)
	if o == nil {
		return ErrUnknownOrder
	}
	o.resting, o.waiting, o.Status = false, false, Cancelled
	return nil
}

func (m *refBook) amend(id uint64, qty, limit, now int64) ([]refFill, error) {
	o := m.find(id)
	switch {
	case o == nil:
		return nil, ErrUnknownOrder
	case isExpired(o, now):
		return nil, ErrOrderDone
	}
	if qty == 0 {
		qty = o.Qty
	}
	if limit == 0 {
		limit = o.Limit
	}
	switch {
	case qty <= o.Filled || qty > MaxQuantity:
		return nil, ErrBadQuantity
	case limit != o.Limit && !o.hasLimit():
		return nil, ErrBadOrder
	case o.hasLimit() && (limit <= 0 || limit > MaxPrice):
		return nil, ErrBadPrice
	}
	if limit == o.Limit && qty <= o.Qty {
		o.Qty = qty // priority kept
		return nil, nil
	}
	if o.resting || o.Triggered {
		if o.PostOnly && m.wouldTake(o.Side, limit) {
			return nil, ErrWouldTake
		}
		low, high := collar(m.reference())
		if o.Type == Limit && (o.Side == Buy && limit > high || o.Side == Sell && limit < low) {
			return nil, ErrBeyondCollar
		}
	}
	m.nextSeq++
	o.Qty, o.Limit, o.Seq = qty, limit, m.nextSeq
	if o.waiting {
		return nil, nil
	}
	o.resting = false
	fills := m.take(o, now)
	return append(fills, m.fireStops(now)...), nil
}

// expireDue ends up to max due DAY orders, in entry order.
func (m *refBook) expireDue(now int64, max int) []uint64 {
	var done []uint64
	for _, o := range m.live {
		if len(done) >= max {
			break
		}
		if (o.resting || o.waiting) && isExpired(o, now) {
			o.resting, o.waiting, o.Status = false, false, Expired
			done = append(done, o.ID)
		}
	}
	return done
}

// depth aggregates resting orders per price, best first.
func (m *refBook) depth(side Side) []Level {
	agg := map[int64]*Level{}
	var prices []int64
	for _, o := range m.live {
		if !o.resting || o.Side != side {
			continue
		}
		l, ok := agg[o.Limit]
		if !ok {
			l = &Level{Price: o.Limit}
			agg[o.Limit] = l
			prices = append(prices, o.Limit)
		}
		l.Qty += o.remaining()
		l.Orders++
	}
	slices.Sort(prices)
	if side == Buy {
		slices.Reverse(prices)
	}
	out := []Level{}
	for _, p := range prices {
		out = append(out, *agg[p])
	}
	return out
}

// ---------------------------------------------------------------- driver

type diffSym struct {
	name   string
	book   *Book
	model  *refBook
	orders map[uint64]*Order // engine orders accepted into this book
	fillQ  map[uint64]int64  // engine fills per order
	fillN  map[uint64]int64  // engine notional per order
}

type differ struct {
	t      testing.TB
	seed   int64
	r      *rand.Rand
	now    int64
	nextID uint64
	syms   []*diffSym
	ids    []uint64 // every ID handed out, for cancels and amends
	trace  []string
	step   int
	stats  map[string]int
}

func newDiffer(t testing.TB, seed int64) *differ {
	d := &differ{t: t, seed: seed, r: rand.New(rand.NewSource(seed)), now: tNow, stats: map[string]int{}}
	for i, ref := range []int64{10_000, 2_500} {
		name := fmt.Sprintf("S%d", i)
		d.syms = append(d.syms, &diffSym{
			name: name, book: NewBook(name, ref), model: &refBook{ref: ref},
			orders: map[uint64]*Order{}, fillQ: map[uint64]int64{}, fillN: map[uint64]int64{},
		})
	}
	return d
}

func (d *differ) fatalf(format string, args ...any) {
	d.t.Helper()
	tail := d.trace
	if len(tail) > 25 {
		tail = tail[len(tail)-25:]
	}
	d.t.Fatalf("seed %d (HATS_MARKET_SEED=%d), step %d: %s\nlast commands:\n  %s",
		d.seed, d.seed, d.step, fmt.Sprintf(format, args...), strings.Join(tail, "\n  "))
}

func (d *differ) pick(weights ...int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := d.r.Intn(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	panic("unreachable")
}

// price draws a price near the symbol's reference on a coarse grid, so
// levels collect several orders; now and then far away or beyond the collar.
func (d *differ) price(s *diffSym) int64 {
	ref := s.book.Reference()
	tick := max(ref/400, 1)
	switch d.pick(90, 7, 3) {
	case 0:
		return max(ref+int64(d.r.Intn(25)-12)*tick, 1)
	case 1:
		return max(ref+int64(d.r.Intn(81)-40)*tick, 1) // to ±10%: at and around the collar
	default:
		return max(ref+int64(d.r.Intn(121)-60)*tick, 1)
	}
}

func (d *differ) newOrder(s *diffSym) *Order {
	o := &Order{Account: uint64(1 + d.r.Intn(4)), Symbol: s.name, Side: Side(1 + d.r.Intn(2))}
	o.Type = []Type{Limit, Market, Stop, StopLimit}[d.pick(55, 15, 15, 15)]
	o.TIF = []TIF{GTC, DAY, IOC, FOK}[d.pick(40, 30, 18, 12)]
	switch o.Type {
	case Market:
		if d.r.Intn(20) > 0 {
			o.TIF = []TIF{IOC, FOK}[d.r.Intn(2)]
		}
	case Limit:
		o.Limit = d.price(s)
	case Stop:
		o.Stop = d.price(s)
	case StopLimit:
		o.Stop = d.price(s)
		o.Limit = o.Stop + int64(d.r.Intn(9)-2)*max(o.Stop/400, 1)*map[Side]int64{Buy: 1, Sell: -1}[o.Side]
	}
	if d.r.Intn(12) == 0 {
		o.PostOnly = true
	}
	o.Qty = int64(1 + d.r.Intn(12))
	switch d.pick(85, 12, 2, 1) {
	case 1:
		o.Qty = int64(1 + d.r.Intn(60))
	case 2:
		o.Qty = int64(d.r.Intn(3)) - 1 // 0 or negative
	case 3:
		o.Qty = MaxQuantity + 1
	}
	if d.r.Intn(150) == 0 { // rare junk
		switch d.r.Intn(4) {
		case 0:
			o.Side = 0
		case 1:
			o.Type = 7
		case 2:
			o.TIF = 9
		case 3:
			o.Limit = -o.Limit
		}
	}
	return o
}

func toRef(o *Order) *refOrder {
	return &refOrder{ID: o.ID, Account: o.Account, Side: o.Side, Type: o.Type, TIF: o.TIF, PostOnly: o.PostOnly, Qty: o.Qty, Limit: o.Limit, Stop: o.Stop}
}

func sameErr(got, want error) bool {
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

// snap is an order's observable state, to find what a command changed.
type snap struct {
	Status      Status
	Qty, Filled int64
	Limit       int64
	Seq         uint64
	Triggered   bool
}

func snapOf(o *Order) snap { return snap{o.Status, o.Qty, o.Filled, o.Limit, o.Seq, o.Triggered} }

// step runs one random command through both and compares.
func (d *differ) doStep() {
	d.step++
	d.now += int64(d.r.Intn(20)) * tSec
	if d.r.Intn(400) == 0 {
		// Jump to the end of the day (or beyond) now and then.
		d.now = EndOfUTCDay(d.now) + int64(d.r.Intn(3))*tSec
	}
	s := d.syms[d.r.Intn(len(d.syms))]
	before := map[uint64]snap{}
	for id, o := range s.orders {
		before[id] = snapOf(o)
	}
	var out *Outcome
	var gotErr, wantErr error
	var wantFills []refFill
	var submitted *Order

	switch op := d.pick(62, 14, 16, 3, 5); op {
	case 0: // new order
		o := d.newOrder(s)
		d.nextID++
		o.ID = d.nextID
		d.ids = append(d.ids, o.ID)
		mo := toRef(o)
		d.trace = append(d.trace, fmt.Sprintf("t=%d %s submit id=%d acct=%d %s %s %s po=%v qty=%d limit=%d stop=%d",
			d.now, s.name, o.ID, o.Account, o.Side, o.Type, o.TIF, o.PostOnly, o.Qty, o.Limit, o.Stop))
		gotErr = Validate(o)
		if gotErr == nil {
			gotErr = s.book.Prepare(o)
		}
		if gotErr == nil {
			out, gotErr = s.book.Submit(o, d.now)
		}
		wantFills, wantErr = s.model.submit(mo, d.now)
		if gotErr == nil {
			s.orders[o.ID] = o
			submitted = o
			d.stats["accepted"]++
		} else {
			d.stats["rejected "+rootErr(gotErr)]++
		}
		if o.Type == Stop || o.Type == StopLimit {
			d.stats["stop orders"]++
		}
	case 1: // cancel
		id := d.someID(s)
		d.trace = append(d.trace, fmt.Sprintf("t=%d %s cancel id=%d", d.now, s.name, id))
		var co *Order
		co, gotErr = s.book.Cancel(id, d.now, "cancel")
		wantErr = s.model.cancel(id)
		if gotErr == nil {
			out = &Outcome{Touched: []*Order{co}}
			d.stats["cancelled"]++
		}
	case 2: // amend
		id := d.someID(s)
		var qty, price int64
		if o, ok := s.orders[id]; ok && d.r.Intn(2) == 0 {
			qty = o.Qty + int64(d.r.Intn(9)-5)
		}
		if d.r.Intn(2) == 0 || qty == 0 {
			price = d.price(s)
		}
		if d.r.Intn(40) == 0 {
			qty = -3
		}
		d.trace = append(d.trace, fmt.Sprintf("t=%d %s amend id=%d qty=%d limit=%d", d.now, s.name, id, qty, price))
		out, gotErr = s.book.Amend(id, qty, price, d.now)
		wantFills, wantErr = s.model.amend(id, qty, price, d.now)
		if gotErr == nil {
			d.stats["amended"]++
		} else {
			d.stats["amend rejected "+rootErr(gotErr)]++
		}
	case 3: // expiry sweep
		max := 1 + d.r.Intn(4)
		d.trace = append(d.trace, fmt.Sprintf("t=%d %s expire max=%d", d.now, s.name, max))
		done := s.book.ExpireDue(d.now, max)
		want := s.model.expireDue(d.now, max)
		if !slices.Equal(ids(done), want) {
			d.fatalf("ExpireDue = %v, model %v", ids(done), want)
		}
		out = &Outcome{Touched: done}
		d.stats["expired by sweep"] += len(done)
	default: // idle: only time passes
		d.trace = append(d.trace, fmt.Sprintf("t=%d idle", d.now))
	}

	s.model.prune()
	if !sameErr(gotErr, wantErr) {
		d.fatalf("engine error %v, model error %v", gotErr, wantErr)
	}
	var got []refFill
	if out != nil {
		for _, f := range out.Fills {
			got = append(got, refFill{f.Maker.ID, f.Taker.ID, f.Price, f.Qty})
			for _, o := range []*Order{f.Maker, f.Taker} {
				s.fillQ[o.ID] += f.Qty
				s.fillN[o.ID] += f.Qty * f.Price
			}
		}
	}
	if !slices.Equal(got, wantFills) {
		d.fatalf("fills:\n engine %+v\n model  %+v", got, wantFills)
	}
	d.stats["fills"] += len(got)
	// Every order whose state changed is reported as touched, so the state
	// machine persists it.
	for id, o := range s.orders {
		b, existed := before[id]
		if existed && b == snapOf(o) || !existed && o != submitted {
			continue
		}
		if out == nil || !slices.Contains(out.Touched, o) {
			d.fatalf("order %d changed (%+v → %+v) but is not in Touched", id, b, snapOf(o))
		}
	}
	d.compare(s)
}

func rootErr(err error) string {
	for _, e := range []error{ErrBadOrder, ErrBadQuantity, ErrBadPrice, ErrBeyondCollar, ErrWouldTake, ErrCannotFill, ErrUnknownOrder, ErrOrderDone} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

func (d *differ) someID(s *diffSym) uint64 {
	if open := s.book.RestingOrders(); len(open) > 0 && d.r.Intn(10) < 7 {
		return open[d.r.Intn(len(open))].ID
	}
	if len(d.ids) == 0 || d.r.Intn(25) == 0 {
		return uint64(d.r.Intn(1000) + 1_000_000) // unknown
	}
	// Prefer recent orders: they are more often still open.
	n := len(d.ids)
	if d.r.Intn(4) > 0 {
		return d.ids[n-1-d.r.Intn(min(n, 30))]
	}
	return d.ids[d.r.Intn(n)]
}

// compare checks the engine book against the model and its invariants.
func (d *differ) compare(s *diffSym) {
	b, m := s.book, s.model
	if b.Last != m.last || b.TradeSeq != m.tradeSeq || b.NextSeq != m.nextSeq {
		d.fatalf("%s counters: engine last %d seq %d next %d, model %d %d %d", s.name, b.Last, b.TradeSeq, b.NextSeq, m.last, m.tradeSeq, m.nextSeq)
	}
	if b.Crossed() {
		d.fatalf("%s crossed", s.name)
	}
	if len(m.orders) != len(s.orders) {
		d.fatalf("%s: engine accepted %d orders, model %d", s.name, len(s.orders), len(m.orders))
	}
	inBook := map[uint64]bool{}
	for _, o := range b.RestingOrders() {
		inBook[o.ID] = true
		if !o.Status.Active() {
			d.fatalf("order %d in the book with status %s", o.ID, o.Status)
		}
	}
	for _, mo := range m.orders {
		o := s.orders[mo.ID]
		if o == nil {
			d.fatalf("model order %d unknown to the engine", mo.ID)
		}
		want := snap{mo.Status, mo.Qty, mo.Filled, mo.Limit, mo.Seq, mo.Triggered}
		if got := snapOf(o); got != want || o.Cap != mo.Cap || o.ExpiresAt != mo.ExpiresAt {
			d.fatalf("order %d: engine %+v cap %d exp %d, model %+v cap %d exp %d", o.ID, got, o.Cap, o.ExpiresAt, want, mo.Cap, mo.ExpiresAt)
		}
		if in := mo.resting || mo.waiting; inBook[o.ID] != in {
			d.fatalf("order %d: in engine book %v, in model book %v", o.ID, inBook[o.ID], in)
		}
		// Invariants of the engine alone.
		if o.Filled < 0 || o.Filled > o.Qty {
			d.fatalf("order %d filled %d of %d", o.ID, o.Filled, o.Qty)
		}
		if o.Status.Active() != inBook[o.ID] {
			d.fatalf("order %d: status %s, in book %v", o.ID, o.Status, inBook[o.ID])
		}
		if s.fillQ[o.ID] != o.Filled || s.fillN[o.ID] != o.Notional {
			d.fatalf("order %d: fills sum to %d (notional %d), order says %d (%d)", o.ID, s.fillQ[o.ID], s.fillN[o.ID], o.Filled, o.Notional)
		}
	}
	bids, asks := b.Depth(1 << 30)
	if bids == nil {
		bids = []Level{}
	}
	if asks == nil {
		asks = []Level{}
	}
	if mb, ma := m.depth(Buy), m.depth(Sell); !slices.Equal(bids, mb) || !slices.Equal(asks, ma) {
		d.fatalf("%s depth:\n engine bids %v asks %v\n model  bids %v asks %v", s.name, bids, asks, mb, ma)
	}
	if bp, bq := b.BestBid(); len(bids) > 0 && (bp != bids[0].Price || bq != bids[0].Qty) || len(bids) == 0 && bp != 0 {
		d.fatalf("BestBid %d x%d, depth %v", bp, bq, bids)
	}
	if ap, aq := b.BestAsk(); len(asks) > 0 && (ap != asks[0].Price || aq != asks[0].Qty) || len(asks) == 0 && ap != 0 {
		d.fatalf("BestAsk %d x%d, depth %v", ap, aq, asks)
	}
}

// checkRestore rebuilds every book from copies of its open orders and
// checks the copy is identical; the copy then replaces the original, so
// the rest of the stream also runs on restored books.
func (d *differ) checkRestore() {
	for _, s := range d.syms {
		nb := restoreCopy(d.t, s.book)
		if a, b := stateOf(s.book), stateOf(nb); !equalState(a, b) {
			d.fatalf("%s: restored book differs:\n orig %+v\n rest %+v", s.name, a, b)
		}
		for _, o := range nb.RestingOrders() {
			s.orders[o.ID] = o
		}
		s.book = nb
	}
}

func equalState(a, b bookState) bool { return reflect.DeepEqual(a, b) }

func runDiff(t testing.TB, seed int64, steps int) map[string]int {
	d := newDiffer(t, seed)
	for i := 0; i < steps; i++ {
		d.doStep()
		if i%97 == 96 {
			d.checkRestore()
		}
	}
	return d.stats
}

func diffSeeds(t *testing.T) (seeds []int64, steps int) {
	if v := os.Getenv("HATS_MARKET_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("HATS_MARKET_SEED=%q: %v", v, err)
		}
		seeds = []int64{seed}
	} else {
		base := time.Now().UnixNano()
		n := 6
		switch {
		case os.Getenv("HATS_MARKET_LONG") == "1":
			n = 100
		case testing.Short():
			n = 2
		}
		for i := range n {
			seeds = append(seeds, base+int64(i))
		}
	}
	steps = 3000
	if os.Getenv("HATS_MARKET_LONG") == "1" {
		steps = 10_000
	}
	return seeds, steps
}

func TestDifferentialAgainstModel(t *testing.T) {
	seeds, steps := diffSeeds(t)
	total := map[string]int{}
	for _, seed := range seeds {
		for k, v := range runDiff(t, seed, steps) {
			total[k] += v
		}
	}
	// The stream must exercise what it claims to.
	for _, k := range []string{"accepted", "fills", "cancelled", "amended", "stop orders", "expired by sweep",
		"rejected " + ErrBeyondCollar.Error(), "rejected " + ErrWouldTake.Error(), "rejected " + ErrCannotFill.Error(),
		"rejected " + ErrBadOrder.Error(), "rejected " + ErrBadQuantity.Error()} {
		if total[k] == 0 {
			t.Errorf("the random stream never produced %q (seeds %v); stats %v", k, seeds, total)
		}
	}
	if testing.Verbose() {
		t.Logf("seeds %d..%d, %d steps each: %v", seeds[0], seeds[len(seeds)-1], steps, total)
	}
}

// TestModelSelfCheck pins a few model behaviours by hand, so a bug shared
// by model and engine is less likely to hide.
func TestModelSelfCheck(t *testing.T) {
	m := &refBook{ref: 10_000}
	mk := func(id, acct uint64, side Side, qty, price int64) *refOrder {
		return &refOrder{ID: id, Account: acct, Side: side, Type: Limit, TIF: GTC, Qty: qty, Limit: price}
	}
	for _, o := range []*refOrder{mk(1, 1, Sell, 5, 10_100), mk(2, 2, Sell, 5, 10_050), mk(3, 3, Sell, 5, 10_050)} {
		if _, err := m.submit(o, tNow); err != nil {
			t.Fatal(err)
		}
	}
	fills, err := m.submit(mk(4, 2, Buy, 12, 10_100), tNow)
	want := []refFill{{3, 4, 10_050, 5}, {1, 4, 10_100, 5}} // 2 is the buyer's own: cancelled
	if err != nil || !slices.Equal(fills, want) {
		t.Fatalf("fills %v err %v, want %v", fills, err, want)
	}
	if o := m.orders[1]; o.Status != Cancelled || o.resting {
		t.Fatalf("own order %+v", o)
	}
	if d := m.depth(Buy); len(d) != 1 || d[0] != (Level{Price: 10_100, Qty: 2, Orders: 1}) {
		t.Fatalf("bids %v", d)
	}
}
