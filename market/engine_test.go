package market

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Unit tests of the matching rules, one rule per test. Every operation goes
// through the env helper, which checks the book's structural invariants
// (never crossed, levels agree with their orders, finished orders are gone)
// after each step.

const (
	tRef  int64 = 10_000                    // $100.00
	tNow  int64 = 1_700_000_000_000_000_000 // 2023-11-14 22:13:20 UTC
	tDay  int64 = 86_400 * 1_000_000_000    // one day in ns
	tSec  int64 = 1_000_000_000             // one second in ns
	tEOD  int64 = (tNow/tDay + 1) * tDay    // end of tNow's UTC day
	alice       = uint64(1)
	bob         = uint64(2)
	carol       = uint64(3)
)

type env struct {
	t      testing.TB
	b      *Book
	nextID uint64
	now    int64
	all    []*Order // every order accepted by Submit
}

func newEnv(t testing.TB) *env {
	return &env{t: t, b: NewBook("TEST", tRef), now: tNow}
}

func lim(acct uint64, side Side, qty, price int64) *Order {
	return &Order{Account: acct, Symbol: "TEST", Side: side, Type: Limit, TIF: GTC, Qty: qty, Limit: price}
}

func mkt(acct uint64, side Side, qty int64) *Order {
	return &Order{Account: acct, Symbol: "TEST", Side: side, Type: Market, TIF: IOC, Qty: qty}
}

func stop(acct uint64, side Side, qty, trigger int64) *Order {
	return &Order{Account: acct, Symbol: "TEST", Side: side, Type: Stop, TIF: GTC, Qty: qty, Stop: trigger}
}

func stopLim(acct uint64, side Side, qty, trigger, price int64) *Order {
	return &Order{Account: acct, Symbol: "TEST", Side: side, Type: StopLimit, TIF: GTC, Qty: qty, Stop: trigger, Limit: price}
}

func withTIF(o *Order, tif TIF) *Order { o.TIF = tif; return o }

func postOnly(o *Order) *Order { o.PostOnly = true; return o }

// submit validates, prepares and submits o as the exchange does, then
// checks the book.
func (e *env) submit(o *Order) (*Outcome, error) {
	e.t.Helper()
	e.nextID++
	o.ID = e.nextID
	if err := Validate(o); err != nil {
		return nil, err
	}
	if err := e.b.Prepare(o); err != nil {
		return nil, err
	}
	out, err := e.b.Submit(o, e.now)
	if err == nil {
		e.all = append(e.all, o)
	}
	e.check()
	return out, err
}

func (e *env) must(o *Order) *Outcome {
	e.t.Helper()
	out, err := e.submit(o)
	if err != nil {
		e.t.Fatalf("submit %s %s %s: %v", o.Side, o.Type, o.TIF, err)
	}
	return out
}

func (e *env) amend(id uint64, qty, price int64) (*Outcome, error) {
	e.t.Helper()
	out, err := e.b.Amend(id, qty, price, e.now)
	e.check()
	return out, err
}

func (e *env) cancel(id uint64) (*Order, error) {
	e.t.Helper()
	o, err := e.b.Cancel(id, e.now, "test")
	e.check()
	return o, err
}

// check verifies the invariants that must hold between any two commands.
func (e *env) check() {
	e.t.Helper()
	checkBook(e.t, e.b, e.all)
}

func checkBook(t testing.TB, b *Book, all []*Order) {
	t.Helper()
	if b.Crossed() {
		bp, _ := b.BestBid()
		ap, _ := b.BestAsk()
		t.Fatalf("book crossed: bid %d >= ask %d", bp, ap)
	}
	in := map[uint64]bool{}
	for _, o := range b.RestingOrders() {
		if !o.Status.Active() {
			t.Fatalf("order %d is in the book with status %s", o.ID, o.Status)
		}
		if in[o.ID] {
			t.Fatalf("order %d is in the book twice", o.ID)
		}
		in[o.ID] = true
	}
	for _, o := range all {
		if o.Filled < 0 || o.Filled > o.Qty {
			t.Fatalf("order %d: filled %d of %d", o.ID, o.Filled, o.Qty)
		}
		if o.Status.Active() != in[o.ID] {
			t.Fatalf("order %d: status %s but in book = %v", o.ID, o.Status, in[o.ID])
		}
		if _, found := b.Order(o.ID); found != in[o.ID] {
			t.Fatalf("order %d: Book.Order found = %v, in RestingOrders = %v", o.ID, found, in[o.ID])
		}
		if o.Status == Filled && o.Remaining() != 0 || o.Status == PartiallyFilled && (o.Filled == 0 || o.Remaining() == 0) {
			t.Fatalf("order %d: status %s with filled %d of %d", o.ID, o.Status, o.Filled, o.Qty)
		}
	}
	// Aggregated levels agree with the orders in them.
	bids, asks := b.Depth(1 << 30)
	for _, side := range []struct {
		s      Side
		levels []Level
	}{{Buy, bids}, {Sell, asks}} {
		want := map[int64]Level{}
		for _, o := range b.RestingOrders() {
			if o.Side != side.s || o.level == nil {
				continue
			}
			l := want[o.Limit]
			l.Price, l.Qty, l.Orders = o.Limit, l.Qty+o.Remaining(), l.Orders+1
			want[o.Limit] = l
		}
		if len(want) != len(side.levels) {
			t.Fatalf("%s depth has %d levels, orders make %d", side.s, len(side.levels), len(want))
		}
		for i, l := range side.levels {
			if want[l.Price] != l {
				t.Fatalf("%s level %d = %+v, orders make %+v", side.s, i, l, want[l.Price])
			}
			if i > 0 && (side.s == Buy) == (l.Price > side.levels[i-1].Price) {
				t.Fatalf("%s levels out of order: %d after %d", side.s, l.Price, side.levels[i-1].Price)
			}
		}
	}
}

type fillT struct {
	maker, taker uint64
	price, qty   int64
}

func fillsOf(out *Outcome) []fillT {
	if out == nil {
		return nil
	}
	var fs []fillT
	for _, f := range out.Fills {
		fs = append(fs, fillT{f.Maker.ID, f.Taker.ID, f.Price, f.Qty})
	}
	return fs
}

func wantFills(t testing.TB, out *Outcome, want ...fillT) {
	t.Helper()
	if got := fillsOf(out); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("fills:\n got %+v\nwant %+v", got, want)
	}
}

func wantStatus(t testing.TB, o *Order, st Status, filled int64) {
	t.Helper()
	if o.Status != st || o.Filled != filled {
		t.Fatalf("order %d: status %s filled %d, want %s filled %d (reason %q)", o.ID, o.Status, o.Filled, st, filled, o.Reason)
	}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func touched(out *Outcome, o *Order) bool {
	return out != nil && slices.Contains(out.Touched, o)
}

// bookState is everything observable about a book, for "nothing changed".
type bookState struct {
	bids, asks     []Level
	resting        []Order
	last           int64
	tradeSeq, next uint64
}

func stateOf(b *Book) bookState {
	s := bookState{last: b.Last, tradeSeq: b.TradeSeq, next: b.NextSeq}
	s.bids, s.asks = b.Depth(1 << 30)
	for _, o := range b.RestingOrders() {
		cp := *o
		cp.level = nil
		s.resting = append(s.resting, cp)
	}
	return s
}

func wantUnchanged(t testing.TB, b *Book, before bookState) {
	t.Helper()
	if after := stateOf(b); !reflect.DeepEqual(before, after) {
		t.Fatalf("book changed:\nbefore %+v\n after %+v", before, after)
	}
}

// ---------------------------------------------------------------- rules

func TestPriceTimePriority(t *testing.T) {
	e := newEnv(t)
	a := e.must(lim(alice, Sell, 5, 10_100)).Touched[0]
	b := e.must(lim(bob, Sell, 5, 10_100)).Touched[0]
	c := e.must(lim(carol, Sell, 5, 10_100)).Touched[0]
	d := e.must(lim(carol, Sell, 5, 10_050)).Touched[0] // better price, later
	w := e.must(lim(bob, Sell, 5, 10_200)).Touched[0]   // worse price, earlier than none

	taker := lim(4, Buy, 12, 10_100)
	out := e.must(taker)
	wantFills(t, out,
		fillT{d.ID, taker.ID, 10_050, 5}, // better price first
		fillT{a.ID, taker.ID, 10_100, 5}, // then FIFO within the level
		fillT{b.ID, taker.ID, 10_100, 2},
	)
	wantStatus(t, d, Filled, 5)
	wantStatus(t, a, Filled, 5)
	wantStatus(t, b, PartiallyFilled, 2)
	wantStatus(t, c, Open, 0)
	wantStatus(t, w, Open, 0)
	wantStatus(t, taker, Filled, 12)

	// Same on the bid side: higher bids first, FIFO within a level.
	e2 := newEnv(t)
	b1 := e2.must(lim(alice, Buy, 3, 9_900)).Touched[0]
	b2 := e2.must(lim(bob, Buy, 3, 9_950)).Touched[0]
	b3 := e2.must(lim(carol, Buy, 3, 9_950)).Touched[0]
	s := lim(4, Sell, 7, 9_900)
	wantFills(t, e2.must(s),
		fillT{b2.ID, s.ID, 9_950, 3},
		fillT{b3.ID, s.ID, 9_950, 3},
		fillT{b1.ID, s.ID, 9_900, 1},
	)
}

func TestTradesAtRestingPrice(t *testing.T) {
	e := newEnv(t)
	ask := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	buy := lim(bob, Buy, 4, 10_500)
	wantFills(t, e.must(buy), fillT{ask.ID, buy.ID, 10_000, 4})
	if buy.AvgFillPrice() != 10_000 || buy.Notional != 40_000 {
		t.Fatalf("taker avg %d notional %d, want 10000, 40000", buy.AvgFillPrice(), buy.Notional)
	}
	bid := e.must(lim(carol, Buy, 10, 9_800)).Touched[0]
	sell := lim(bob, Sell, 4, 9_500)
	wantFills(t, e.must(sell), fillT{bid.ID, sell.ID, 9_800, 4})
	if e.b.Last != 9_800 || e.b.TradeSeq != 2 {
		t.Fatalf("Last %d TradeSeq %d, want 9800, 2", e.b.Last, e.b.TradeSeq)
	}
}

func TestPartialFills(t *testing.T) {
	e := newEnv(t)
	ask := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	buy := lim(bob, Buy, 4, 10_000)
	e.must(buy)
	wantStatus(t, ask, PartiallyFilled, 4)
	wantStatus(t, buy, Filled, 4)
	if _, asks := e.b.Depth(5); len(asks) != 1 || asks[0] != (Level{Price: 10_000, Qty: 6, Orders: 1}) {
		t.Fatalf("asks = %+v, want one level 10000 x6", asks)
	}
	// A larger taker fills the rest and rests its own remainder.
	big := lim(carol, Buy, 10, 10_000)
	wantFills(t, e.must(big), fillT{ask.ID, big.ID, 10_000, 6})
	wantStatus(t, ask, Filled, 10)
	wantStatus(t, big, PartiallyFilled, 6)
	bids, asks := e.b.Depth(5)
	if len(asks) != 0 || len(bids) != 1 || bids[0] != (Level{Price: 10_000, Qty: 4, Orders: 1}) {
		t.Fatalf("depth bids %+v asks %+v, want bid 10000 x4 only", bids, asks)
	}
}

func TestMarketOrderWalksBookUpToCollar(t *testing.T) {
	e := newEnv(t)
	_, high := CollarBounds(tRef)
	if high != 11_000 {
		t.Fatalf("collar high %d, want 11000", high)
	}
	a1 := e.must(lim(alice, Sell, 5, 10_500)).Touched[0]
	a2 := e.must(lim(alice, Sell, 5, 11_000)).Touched[0]
	// A passive sell beyond the collar may rest; a market buy must not
	// reach it.
	a3 := e.must(lim(alice, Sell, 5, 11_001)).Touched[0]

	m := mkt(bob, Buy, 20)
	out := e.must(m)
	if m.Cap != 11_000 {
		t.Fatalf("market buy cap %d, want 11000 (10%% over the reference)", m.Cap)
	}
	wantFills(t, out, fillT{a1.ID, m.ID, 10_500, 5}, fillT{a2.ID, m.ID, 11_000, 5})
	wantStatus(t, m, Cancelled, 10)
	if m.Reason == "" {
		t.Fatal("market remainder cancelled without a reason")
	}
	wantStatus(t, a3, Open, 0)
	if o, ok := e.b.Order(m.ID); ok || m.level != nil {
		t.Fatalf("market order rests: %+v", o)
	}

	// After trades the collar follows the last price: 11000 → sell cap 9900.
	s := mkt(carol, Sell, 1)
	e.must(s)
	if s.Cap != 9_900 {
		t.Fatalf("market sell cap %d, want 9900 (10%% under last 11000)", s.Cap)
	}
}

func TestMarketOrderNeverRests(t *testing.T) {
	for _, tif := range []TIF{IOC, FOK} {
		e := newEnv(t)
		m := withTIF(mkt(alice, Buy, 5), tif)
		out, err := e.submit(m)
		if tif == FOK {
			wantErr(t, err, ErrCannotFill)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		wantFills(t, out)
		wantStatus(t, m, Cancelled, 0)
		if !strings.Contains(m.Reason, "collar") || !touched(out, m) {
			t.Fatalf("reason %q touched %v", m.Reason, touched(out, m))
		}
		if bids, asks := e.b.Depth(5); len(bids)+len(asks) != 0 {
			t.Fatal("market order rested")
		}
	}
	// Market orders with a resting time in force are invalid.
	for _, tif := range []TIF{GTC, DAY} {
		wantErr(t, Validate(withTIF(mkt(alice, Buy, 5), tif)), ErrBadOrder)
	}
}

func TestLimitBeyondCollarRejected(t *testing.T) {
	cases := []struct {
		side  Side
		price int64
		last  int64
		ok    bool
	}{
		{Buy, 11_000, 0, true},
		{Buy, 11_001, 0, false},
		{Sell, 9_000, 0, true},
		{Sell, 8_999, 0, false},
		{Buy, 13_200, 12_000, true}, // the reference is the last trade once there is one
		{Buy, 13_201, 12_000, false},
		{Sell, 10_800, 12_000, true},
		{Sell, 10_799, 12_000, false},
		{Buy, 1, 0, true}, // a passive price far away is fine
		{Sell, MaxPrice, 0, true},
	}
	for _, c := range cases {
		e := newEnv(t)
		e.b.Last = c.last
		before := stateOf(e.b)
		_, err := e.submit(lim(alice, c.side, 1, c.price))
		if c.ok && err != nil {
			t.Fatalf("%s %d (last %d): %v", c.side, c.price, c.last, err)
		}
		if !c.ok {
			wantErr(t, err, ErrBeyondCollar)
			wantUnchanged(t, e.b, before)
		}
	}
}

func TestIOCRemainderCancelled(t *testing.T) {
	e := newEnv(t)
	ask := e.must(lim(alice, Sell, 3, 10_000)).Touched[0]
	e.must(lim(alice, Sell, 3, 10_010))
	ioc := withTIF(lim(bob, Buy, 5, 10_000), IOC)
	out := e.must(ioc)
	wantFills(t, out, fillT{ask.ID, ioc.ID, 10_000, 3})
	wantStatus(t, ioc, Cancelled, 3)
	if !strings.Contains(ioc.Reason, "immediate-or-cancel") {
		t.Fatalf("reason %q", ioc.Reason)
	}
	if bp, _ := e.b.BestBid(); bp != 0 {
		t.Fatalf("IOC remainder rested at %d", bp)
	}
}

func TestFOKAllOrNothing(t *testing.T) {
	e := newEnv(t)
	own := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	other := e.must(lim(bob, Sell, 5, 10_000)).Touched[0]
	e.must(lim(carol, Sell, 5, 10_050))

	// 10 at or under 10000, but alice's own 10 do not count: only 5 fill.
	before := stateOf(e.b)
	_, err := e.submit(withTIF(lim(alice, Buy, 10, 10_000), FOK))
	wantErr(t, err, ErrCannotFill)
	wantUnchanged(t, e.b, before)
	wantStatus(t, own, Open, 0)

	// Same for a market FOK.
	_, err = e.submit(withTIF(mkt(alice, Buy, 11), FOK))
	wantErr(t, err, ErrCannotFill)
	wantUnchanged(t, e.b, before)

	// 10 available through 10050 (bob 5, carol 5): fills whole; STP
	// cancels alice's own resting sell on the way.
	fok := withTIF(lim(alice, Buy, 10, 10_050), FOK)
	out := e.must(fok)
	wantStatus(t, fok, Filled, 10)
	wantStatus(t, own, Cancelled, 0)
	wantStatus(t, other, Filled, 5)
	if len(out.Fills) != 2 {
		t.Fatalf("fills %+v", fillsOf(out))
	}

	// Expired DAY orders do not count either.
	e2 := newEnv(t)
	e2.must(withTIF(lim(bob, Sell, 5, 10_000), DAY))
	e2.now = tEOD
	before = stateOf(e2.b)
	_, err = e2.submit(withTIF(lim(alice, Buy, 5, 10_000), FOK))
	wantErr(t, err, ErrCannotFill)
	wantUnchanged(t, e2.b, before)
}

func TestPostOnly(t *testing.T) {
	e := newEnv(t)
	e.must(lim(alice, Sell, 5, 10_000))
	for _, price := range []int64{10_000, 10_500} {
		before := stateOf(e.b)
		_, err := e.submit(postOnly(lim(bob, Buy, 5, price)))
		wantErr(t, err, ErrWouldTake)
		wantUnchanged(t, e.b, before)
	}
	p := postOnly(lim(bob, Buy, 5, 9_999))
	out := e.must(p)
	wantFills(t, out)
	wantStatus(t, p, Open, 0)
	if bp, _ := e.b.BestBid(); bp != 9_999 {
		t.Fatalf("best bid %d, want the post-only 9999", bp)
	}
	// Post-only must be able to rest.
	wantErr(t, Validate(withTIF(postOnly(lim(bob, Buy, 5, 9_000)), IOC)), ErrBadOrder)
	wantErr(t, Validate(withTIF(postOnly(lim(bob, Buy, 5, 9_000)), FOK)), ErrBadOrder)
	wantErr(t, Validate(&Order{Side: Buy, Type: Market, TIF: IOC, Qty: 1, PostOnly: true}), ErrBadOrder)
	wantErr(t, Validate(postOnly(stop(bob, Buy, 1, 10_000))), ErrBadOrder)
}

func TestSelfTradePrevention(t *testing.T) {
	e := newEnv(t)
	own := e.must(lim(alice, Sell, 5, 10_000)).Touched[0]
	other := e.must(lim(bob, Sell, 5, 10_000)).Touched[0]
	buy := lim(alice, Buy, 8, 10_000)
	out := e.must(buy)
	// The resting own order is cancelled; the incoming one continues.
	wantStatus(t, own, Cancelled, 0)
	if !strings.Contains(own.Reason, "self-trade") || !touched(out, own) {
		t.Fatalf("own order reason %q touched %v", own.Reason, touched(out, own))
	}
	wantFills(t, out, fillT{other.ID, buy.ID, 10_000, 5})
	wantStatus(t, buy, PartiallyFilled, 5)
	bids, asks := e.b.Depth(5)
	if len(asks) != 0 || len(bids) != 1 || bids[0] != (Level{Price: 10_000, Qty: 3, Orders: 1}) {
		t.Fatalf("depth bids %+v asks %+v", bids, asks)
	}

	// Own orders behind the best are cancelled only when reached.
	e2 := newEnv(t)
	o1 := e2.must(lim(bob, Sell, 2, 10_000)).Touched[0]
	o2 := e2.must(lim(alice, Sell, 2, 10_010)).Touched[0]
	m := mkt(alice, Buy, 2)
	e2.must(m)
	wantStatus(t, o1, Filled, 2)
	wantStatus(t, o2, Open, 0)
}

func TestEndOfUTCDay(t *testing.T) {
	cases := []struct{ in, want int64 }{
		{0, tDay},
		{1, tDay},
		{tDay - 1, tDay},
		{tDay, 2 * tDay},
		{tNow, tEOD},
	}
	for _, c := range cases {
		if got := EndOfUTCDay(c.in); got != c.want {
			t.Fatalf("EndOfUTCDay(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if tEOD != 1_700_006_400_000_000_000 {
		t.Fatalf("test constant tEOD = %d", tEOD)
	}
}

func TestDayOrdersExpire(t *testing.T) {
	e := newEnv(t)
	day := withTIF(lim(alice, Sell, 5, 10_000), DAY)
	e.must(day)
	gtc := e.must(lim(bob, Sell, 5, 10_000)).Touched[0]
	if day.ExpiresAt != tEOD || gtc.ExpiresAt != 0 {
		t.Fatalf("ExpiresAt day %d gtc %d, want %d and 0", day.ExpiresAt, gtc.ExpiresAt, tEOD)
	}
	// One nanosecond before the end of the day it still trades.
	e.now = tEOD - 1
	b1 := lim(carol, Buy, 1, 10_000)
	wantFills(t, e.must(b1), fillT{day.ID, b1.ID, 10_000, 1})
	// At the end of the day matching skips it and expires it.
	e.now = tEOD
	b2 := lim(carol, Buy, 2, 10_000)
	out := e.must(b2)
	wantFills(t, out, fillT{gtc.ID, b2.ID, 10_000, 2})
	wantStatus(t, day, Expired, 1)
	if !touched(out, day) {
		t.Fatal("expired maker not in Touched")
	}

	// ExpireDue sweeps the rest, oldest first, at most max per call.
	e2 := newEnv(t)
	var days []*Order
	for i := range 5 {
		o := withTIF(lim(alice, Buy, 1, 9_000+int64(i)), DAY)
		e2.must(o)
		days = append(days, o)
	}
	stp := withTIF(stop(alice, Sell, 1, 8_000), DAY)
	e2.must(stp)
	e2.must(lim(alice, Buy, 1, 9_500)) // GTC stays
	if got := e2.b.ExpireDue(tEOD-1, 10); len(got) != 0 {
		t.Fatalf("ExpireDue before the end of day expired %d", len(got))
	}
	got := e2.b.ExpireDue(tEOD, 2)
	if len(got) != 2 || got[0] != days[0] || got[1] != days[1] {
		t.Fatalf("ExpireDue(max 2) = %v", ids(got))
	}
	e2.check()
	got = e2.b.ExpireDue(tEOD, 100)
	if want := []uint64{days[2].ID, days[3].ID, days[4].ID, stp.ID}; !slices.Equal(ids(got), want) {
		t.Fatalf("ExpireDue = %v, want %v", ids(got), want)
	}
	for _, o := range append(days, stp) {
		wantStatus(t, o, Expired, 0)
	}
	e2.check()
	if bids, _ := e2.b.Depth(10); len(bids) != 1 || bids[0].Price != 9_500 {
		t.Fatalf("bids after expiry %+v, want only the GTC order", bids)
	}
	if got := e2.b.ExpireDue(tEOD+tDay, 100); len(got) != 0 {
		t.Fatalf("second sweep expired %v", ids(got))
	}

	// A DAY stop whose trigger is reached after its day is expired, not run.
	e3 := newEnv(t)
	ds := withTIF(stop(alice, Buy, 1, 10_000), DAY)
	e3.must(ds)
	e3.must(lim(bob, Sell, 5, 10_000))
	e3.now = tEOD + tSec
	e3.must(lim(carol, Buy, 1, 10_000))
	wantStatus(t, ds, Expired, 0)
}

func ids(os []*Order) []uint64 {
	var out []uint64
	for _, o := range os {
		out = append(out, o.ID)
	}
	return out
}

func TestStopOrders(t *testing.T) {
	e := newEnv(t)
	// Before any trade there is no last price: nothing triggers, even when
	// the reference is past the stop.
	bs := stop(alice, Buy, 3, 10_100)
	ss := stop(bob, Sell, 3, 9_900)
	ssl := stopLim(bob, Sell, 3, 10_200, 9_950) // sell stop at/under 10200
	for _, o := range []*Order{bs, ss, ssl} {
		out := e.must(o)
		wantFills(t, out)
		wantStatus(t, o, Open, 0)
		if o.Triggered {
			t.Fatalf("stop %d triggered before any trade", o.ID)
		}
		if _, ok := e.b.Order(o.ID); !ok {
			t.Fatalf("waiting stop %d not found", o.ID)
		}
	}
	if bids, asks := e.b.Depth(10); len(bids)+len(asks) != 0 {
		t.Fatal("waiting stops appear in the depth")
	}
	if bs.Cap != 11_110 || ss.Cap != 8_910 {
		t.Fatalf("stop caps %d %d: want 10%% around the trigger price", bs.Cap, ss.Cap)
	}

	// Liquidity for the stops, then a trade at 10050: under the buy stop,
	// over the sell stop; only the sell stop-limit (≤10200) triggers.
	e.must(lim(carol, Sell, 10, 10_150))
	e.must(lim(carol, Buy, 10, 9_950))
	e.must(lim(carol, Sell, 1, 10_050))
	x := lim(4, Buy, 1, 10_050)
	out := e.must(x)
	if e.b.Last != 9_950 {
		t.Fatalf("last %d, want 9950 (the triggered stop-limit's trade)", e.b.Last)
	}
	if !ssl.Triggered || ssl.Status != Filled || bs.Triggered || ss.Triggered {
		t.Fatalf("after 10050: stop-limit %s/%v, buy stop %v, sell stop %v", ssl.Status, ssl.Triggered, bs.Triggered, ss.Triggered)
	}
	// The stop-limit sells into the 9950 bid; last 9950 is still over the
	// sell stop's 9900.
	wantFills(t, out, fillT{6, x.ID, 10_050, 1}, fillT{5, ssl.ID, 9_950, 3})
	if ss.Triggered {
		t.Fatal("sell stop triggered early")
	}
	// A trade at 10150 reaches the buy stop (last ≥ 10100): it runs as a
	// market buy within its collar.
	y := lim(4, Buy, 1, 10_150)
	out = e.must(y)
	if !bs.Triggered || bs.Status != Filled || bs.AvgFillPrice() != 10_150 {
		t.Fatalf("buy stop %s triggered %v avg %d", bs.Status, bs.Triggered, bs.AvgFillPrice())
	}
	if !touched(out, bs) {
		t.Fatal("triggered stop not touched")
	}

	// A stop placed when its trigger is already reached runs at once.
	now := stop(alice, Buy, 1, 10_000) // last is 10150 ≥ 10000
	e.must(now)
	if !now.Triggered || now.Status != Filled {
		t.Fatalf("already-triggered stop: %s triggered %v", now.Status, now.Triggered)
	}
	// A stop-limit triggered at once rests its remainder as a limit order.
	sl := stopLim(alice, Buy, 50, 10_000, 10_150)
	e.must(sl)
	if !sl.Triggered || sl.Status != PartiallyFilled {
		t.Fatalf("stop-limit: %s triggered %v", sl.Status, sl.Triggered)
	}
	if bp, _ := e.b.BestBid(); bp != 10_150 {
		t.Fatalf("stop-limit remainder not resting at its limit: best bid %d", bp)
	}
}

func TestPostOnlyStopLimitNeverTakes(t *testing.T) {
	e := newEnv(t)
	// Waits for a trade at 10100 or above; at that point a bid at 10200
	// would take the 10150 ask, which a post-only order must never do.
	po := e.must(withTIF(postOnly(stopLim(alice, Buy, 2, 10_100, 10_200)), GTC)).Touched[0]
	e.must(lim(carol, Sell, 5, 10_150))
	e.must(lim(carol, Sell, 1, 10_100))
	x := lim(bob, Buy, 1, 10_100)
	out := e.must(x)
	wantFills(t, out, fillT{3, x.ID, 10_100, 1})
	if po.Filled != 0 || po.Status != Cancelled || !po.Triggered || !touched(out, po) {
		t.Fatalf("triggered post-only stop-limit: %s filled %d triggered %v (reason %q)", po.Status, po.Filled, po.Triggered, po.Reason)
	}
	// One that would not take rests as a post-only limit order.
	po2 := e.must(postOnly(stopLim(alice, Buy, 2, 10_100, 10_120))).Touched[0]
	if po2.Status != Open || !po2.Triggered {
		t.Fatalf("post-only stop-limit at once: %s triggered %v", po2.Status, po2.Triggered)
	}
	if bp, _ := e.b.BestBid(); bp != 10_120 {
		t.Fatalf("best bid %d, want 10120", bp)
	}
}

func TestStopCascade(t *testing.T) {
	e := newEnv(t)
	// Bids 9900, 9800, 9700; sell stops at 9900 and 9800, each selling
	// into the next level; one trade at 9900 cascades down.
	e.must(lim(carol, Buy, 1, 9_900))
	e.must(lim(carol, Buy, 1, 9_800))
	e.must(lim(carol, Buy, 1, 9_700))
	s2 := stop(bob, Sell, 1, 9_800) // entered first, triggers second
	s1 := stop(alice, Sell, 1, 9_900)
	s3 := stop(alice, Sell, 1, 9_000) // never reached
	for _, o := range []*Order{s2, s1, s3} {
		e.must(o)
	}
	x := lim(4, Sell, 1, 9_900)
	out := e.must(x)
	prices := []int64{}
	for _, f := range out.Fills {
		prices = append(prices, f.Price)
	}
	if !slices.Equal(prices, []int64{9_900, 9_800, 9_700}) {
		t.Fatalf("cascade prices %v, want 9900 9800 9700", prices)
	}
	if out.Fills[1].Taker != s1 || out.Fills[2].Taker != s2 {
		t.Fatal("cascade did not run s1 (triggered by 9900) then s2 (by 9800)")
	}
	wantStatus(t, s3, Open, 0)
	if e.b.Last != 9_700 || e.b.TradeSeq != 3 {
		t.Fatalf("last %d seq %d", e.b.Last, e.b.TradeSeq)
	}
}

func TestStopsFireOldestFirst(t *testing.T) {
	e := newEnv(t)
	e.must(lim(carol, Buy, 10, 9_900))
	a := stop(alice, Sell, 1, 9_950)
	b := stop(bob, Sell, 1, 10_000)
	e.must(a)
	e.must(b)
	x := lim(4, Sell, 1, 9_900)
	out := e.must(x)
	if len(out.Fills) != 3 || out.Fills[1].Taker != a || out.Fills[2].Taker != b {
		t.Fatalf("fills %+v: want the stops in entry order", fillsOf(out))
	}
}

func TestAmendReduceKeepsPriority(t *testing.T) {
	e := newEnv(t)
	a := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	b := e.must(lim(bob, Sell, 10, 10_000)).Touched[0]
	seq := a.Seq
	out, err := e.amend(a.ID, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Seq != seq || a.Qty != 4 || !touched(out, a) {
		t.Fatalf("after reduce: seq %d (was %d) qty %d", a.Seq, seq, a.Qty)
	}
	if _, asks := e.b.Depth(1); asks[0] != (Level{Price: 10_000, Qty: 14, Orders: 2}) {
		t.Fatalf("level %+v", asks[0])
	}
	x := lim(carol, Buy, 5, 10_000)
	wantFills(t, e.must(x), fillT{a.ID, x.ID, 10_000, 4}, fillT{b.ID, x.ID, 10_000, 1})

	// Amending with the same price and quantity is a no-op that keeps
	// priority too.
	c := e.must(lim(alice, Sell, 3, 10_010)).Touched[0]
	seq = c.Seq
	if _, err := e.amend(c.ID, 3, 10_010); err != nil || c.Seq != seq {
		t.Fatalf("no-op amend: err %v seq %d (was %d)", err, c.Seq, seq)
	}
}

func TestAmendLosesPriority(t *testing.T) {
	for _, change := range []string{"price", "qty up"} {
		e := newEnv(t)
		a := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
		b := e.must(lim(bob, Sell, 10, 10_000)).Touched[0]
		seq := a.Seq
		var err error
		if change == "price" {
			_, err = e.amend(a.ID, 0, 10_001)
			if err == nil {
				_, err = e.amend(a.ID, 0, 10_000) // back to the level, behind b
			}
		} else {
			_, err = e.amend(a.ID, 12, 0)
		}
		if err != nil {
			t.Fatalf("%s: %v", change, err)
		}
		if a.Seq <= seq || a.Seq <= b.Seq {
			t.Fatalf("%s: seq %d not after b's %d", change, a.Seq, b.Seq)
		}
		x := lim(carol, Buy, 12, 10_000)
		wantFills(t, e.must(x), fillT{b.ID, x.ID, 10_000, 10}, fillT{a.ID, x.ID, 10_000, 2})
	}
}

func TestAmendPriceMayTrade(t *testing.T) {
	e := newEnv(t)
	ask := e.must(lim(alice, Sell, 5, 10_100)).Touched[0]
	bid := e.must(lim(bob, Buy, 8, 10_000)).Touched[0]
	out, err := e.amend(bid.ID, 0, 10_100)
	if err != nil {
		t.Fatal(err)
	}
	wantFills(t, out, fillT{ask.ID, bid.ID, 10_100, 5})
	wantStatus(t, bid, PartiallyFilled, 5)
	if bp, _ := e.b.BestBid(); bp != 10_100 {
		t.Fatalf("best bid %d", bp)
	}
	// Post-only amends that would take are refused, unchanged.
	e.must(lim(alice, Sell, 5, 10_200))
	po := e.must(postOnly(lim(carol, Buy, 1, 10_000))).Touched[0]
	before := stateOf(e.b)
	_, err = e.amend(po.ID, 0, 10_200)
	wantErr(t, err, ErrWouldTake)
	wantUnchanged(t, e.b, before)
	// Amends beyond the collar are refused, unchanged (last 10100 → 11110).
	_, err = e.amend(bid.ID, 0, 11_111)
	wantErr(t, err, ErrBeyondCollar)
	wantUnchanged(t, e.b, before)
}

func TestAmendErrors(t *testing.T) {
	e := newEnv(t)
	a := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	e.must(lim(bob, Buy, 4, 10_000))
	before := stateOf(e.b)
	for _, c := range []struct {
		qty, price int64
		err        error
	}{
		{4, 0, ErrBadQuantity}, // not above what already filled
		{3, 0, ErrBadQuantity},
		{MaxQuantity + 1, 0, ErrBadQuantity},
		{0, MaxPrice + 1, ErrBadPrice},
		{0, -5, ErrBadPrice},
	} {
		_, err := e.amend(a.ID, c.qty, c.price)
		wantErr(t, err, c.err)
		wantUnchanged(t, e.b, before)
	}
	_, err := e.amend(999, 1, 0)
	wantErr(t, err, ErrUnknownOrder)
	// Finished orders are no longer in the book.
	_, err = e.cancel(a.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.amend(a.ID, 8, 0)
	wantErr(t, err, ErrUnknownOrder)
	// Market and stop orders have no limit to change.
	s := e.must(stop(alice, Buy, 5, 20_000)).Touched[0]
	_, err = e.amend(s.ID, 0, 10_000)
	wantErr(t, err, ErrBadOrder)
}

func TestAmendStop(t *testing.T) {
	e := newEnv(t)
	s1 := e.must(stop(alice, Buy, 5, 10_500)).Touched[0]
	s2 := e.must(stop(bob, Buy, 5, 10_500)).Touched[0]
	// Reducing a stop's quantity keeps its place.
	seq := s1.Seq
	if _, err := e.amend(s1.ID, 3, 0); err != nil {
		t.Fatalf("reduce stop quantity: %v", err)
	}
	if s1.Qty != 3 || s1.Seq != seq || s1.Triggered {
		t.Fatalf("stop after reduce: qty %d seq %d triggered %v", s1.Qty, s1.Seq, s1.Triggered)
	}
	// Raising it sends it behind s2; it still waits.
	if _, err := e.amend(s1.ID, 6, 0); err != nil {
		t.Fatalf("raise stop quantity: %v", err)
	}
	if s1.Seq <= s2.Seq || s1.Triggered || s1.Status != Open {
		t.Fatalf("stop after raise: seq %d (s2 %d) triggered %v %s", s1.Seq, s2.Seq, s1.Triggered, s1.Status)
	}
	// A waiting stop-limit's limit may change without a collar check; it
	// keeps waiting.
	sl := e.must(stopLim(alice, Buy, 2, 10_500, 10_600)).Touched[0]
	if _, err := e.amend(sl.ID, 0, 10_700); err != nil {
		t.Fatalf("amend stop-limit limit: %v", err)
	}
	if sl.Limit != 10_700 || sl.Triggered {
		t.Fatalf("stop-limit after amend: limit %d triggered %v", sl.Limit, sl.Triggered)
	}
	// Triggered in order: s2 then s1 then sl.
	e.must(lim(carol, Sell, 20, 10_500))
	x := lim(4, Buy, 1, 10_500)
	out := e.must(x)
	var takers []uint64
	for _, f := range out.Fills {
		takers = append(takers, f.Taker.ID)
	}
	if !slices.Equal(takers, []uint64{x.ID, s2.ID, s1.ID, sl.ID}) {
		t.Fatalf("takers %v, want %v", takers, []uint64{x.ID, s2.ID, s1.ID, sl.ID})
	}
}

func TestAmendExpiredDayOrderRefused(t *testing.T) {
	e := newEnv(t)
	d := e.must(withTIF(lim(alice, Buy, 5, 9_900), DAY)).Touched[0]
	e.must(lim(bob, Sell, 5, 10_000))
	e.now = tEOD + tSec
	// Moving the expired order's price onto the ask must not trade: its
	// day is over.
	before := stateOf(e.b)
	out, err := e.amend(d.ID, 0, 10_000)
	if err == nil {
		t.Fatalf("amend of an expired DAY order succeeded: fills %+v status %s", fillsOf(out), d.Status)
	}
	wantErr(t, err, ErrOrderDone)
	wantUnchanged(t, e.b, before)
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	a := e.must(lim(alice, Sell, 10, 10_000)).Touched[0]
	s := e.must(stop(alice, Sell, 10, 9_000)).Touched[0]
	for _, o := range []*Order{a, s} {
		got, err := e.cancel(o.ID)
		if err != nil || got != o {
			t.Fatalf("cancel %d: %v", o.ID, err)
		}
		wantStatus(t, o, Cancelled, 0)
		if o.Reason != "test" || o.Updated != e.now {
			t.Fatalf("cancel reason %q updated %d", o.Reason, o.Updated)
		}
		_, err = e.cancel(o.ID)
		wantErr(t, err, ErrUnknownOrder)
	}
	_, err := e.cancel(12345)
	wantErr(t, err, ErrUnknownOrder)
	if bids, asks := e.b.Depth(5); len(bids)+len(asks) != 0 {
		t.Fatal("cancelled order still in the depth")
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		o    *Order
		err  error
	}{
		{"limit", lim(1, Buy, 1, 1), nil},
		{"limit max", lim(1, Sell, MaxQuantity, MaxPrice), nil},
		{"market ioc", mkt(1, Buy, 1), nil},
		{"market fok", withTIF(mkt(1, Sell, 1), FOK), nil},
		{"stop", stop(1, Buy, 1, 100), nil},
		{"stop-limit", stopLim(1, Buy, 1, 100, 101), nil},
		{"stop-limit post-only day", withTIF(postOnly(stopLim(1, Buy, 1, 100, 101)), DAY), nil},
		{"bad side", &Order{Side: 0, Type: Limit, TIF: GTC, Qty: 1, Limit: 1}, ErrBadOrder},
		{"side 3", &Order{Side: 3, Type: Limit, TIF: GTC, Qty: 1, Limit: 1}, ErrBadOrder},
		{"zero qty", lim(1, Buy, 0, 1), ErrBadQuantity},
		{"negative qty", lim(1, Buy, -1, 1), ErrBadQuantity},
		{"huge qty", lim(1, Buy, MaxQuantity+1, 1), ErrBadQuantity},
		{"zero limit", lim(1, Buy, 1, 0), ErrBadPrice},
		{"negative limit", lim(1, Buy, 1, -100), ErrBadPrice},
		{"huge limit", lim(1, Buy, 1, MaxPrice+1), ErrBadPrice},
		{"limit with stop", &Order{Side: Buy, Type: Limit, TIF: GTC, Qty: 1, Limit: 1, Stop: 1}, ErrBadOrder},
		{"market with limit", &Order{Side: Buy, Type: Market, TIF: IOC, Qty: 1, Limit: 1}, ErrBadOrder},
		{"market with stop", &Order{Side: Buy, Type: Market, TIF: IOC, Qty: 1, Stop: 1}, ErrBadOrder},
		{"market gtc", withTIF(mkt(1, Buy, 1), GTC), ErrBadOrder},
		{"stop without price", stop(1, Buy, 1, 0), ErrBadPrice},
		{"stop-limit without stop", stopLim(1, Buy, 1, 0, 100), ErrBadPrice},
		{"stop-limit without limit", stopLim(1, Buy, 1, 100, 0), ErrBadPrice},
		{"stop post-only", postOnly(stop(1, Buy, 1, 100)), ErrBadOrder},
		{"unknown type", &Order{Side: Buy, Type: 9, TIF: GTC, Qty: 1}, ErrBadOrder},
		{"unknown tif", withTIF(lim(1, Buy, 1, 1), 0), ErrBadOrder},
		{"post-only ioc", withTIF(postOnly(lim(1, Buy, 1, 1)), IOC), ErrBadOrder},
	}
	for _, c := range cases {
		err := Validate(c.o)
		if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: Validate = %v, want %v", c.name, err, c.err)
		}
	}
}

func TestCollarBounds(t *testing.T) {
	for _, c := range []struct{ ref, low, high int64 }{
		{10_000, 9_000, 11_000},
		{1, 1, 1},
		{5, 5, 5},
		{15, 14, 16},
		{MaxPrice, MaxPrice - MaxPrice/10, MaxPrice + MaxPrice/10},
	} {
		if l, h := CollarBounds(c.ref); l != c.low || h != c.high {
			t.Errorf("CollarBounds(%d) = %d, %d; want %d, %d", c.ref, l, h, c.low, c.high)
		}
	}
}

func TestParseFormatPrice(t *testing.T) {
	good := map[string]int64{"150.25": 15_025, "150": 15_000, "150.2": 15_020, "0.01": 1, "1000000": MaxPrice, "007.50": 750}
	for s, want := range good {
		got, err := ParsePrice(s)
		if err != nil || got != want {
			t.Errorf("ParsePrice(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", ".", "1.", ".5", "-1", "+1", "0", "0.00", "1.001", "1e3", "1,5", " 1", "1000000.01", "9999999999", "abc"} {
		if p, err := ParsePrice(s); err == nil || !errors.Is(err, ErrBadPrice) {
			t.Errorf("ParsePrice(%q) = %d, %v; want ErrBadPrice", s, p, err)
		}
	}
	for _, c := range []struct {
		c int64
		s string
	}{{15_025, "150.25"}, {1, "0.01"}, {0, "0.00"}, {-250, "-2.50"}, {100, "1.00"}} {
		if got := FormatPrice(c.c); got != c.s {
			t.Errorf("FormatPrice(%d) = %q, want %q", c.c, got, c.s)
		}
	}
}

// TestRestoreRebuildsIdenticalBook drives a book through a varied history,
// rebuilds a second book from copies of its open orders (as the state
// machine does from storage, in Seq order) and checks the two are the same
// and stay the same under the same further commands.
func TestRestoreRebuildsIdenticalBook(t *testing.T) {
	e := newEnv(t)
	e.must(lim(alice, Sell, 5, 10_100))
	e.must(lim(bob, Sell, 5, 10_100))
	e.must(withTIF(lim(carol, Sell, 5, 10_200), DAY))
	e.must(lim(alice, Buy, 5, 9_900))
	d1 := e.must(withTIF(lim(bob, Buy, 5, 9_900), DAY)).Touched[0]
	d2 := e.must(withTIF(lim(carol, Buy, 5, 9_800), DAY)).Touched[0]
	e.must(stop(alice, Buy, 2, 10_150))
	e.must(withTIF(stopLim(bob, Sell, 2, 9_850, 9_800), DAY))
	e.must(lim(4, Buy, 3, 10_100)) // partial fill of the first ask
	a := e.all[0]
	if _, err := e.amend(a.ID, 4, 0); err != nil { // reduce: keeps priority
		t.Fatal(err)
	}
	if _, err := e.amend(d1.ID, 0, 9_850); err != nil { // DAY order re-entered: new Seq
		t.Fatal(err)
	}
	if _, err := e.amend(d2.ID, 7, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.amend(e.all[2].ID, 0, 10_250); err != nil { // the first DAY order, re-entered last
		t.Fatal(err)
	}

	restored := restoreCopy(t, e.b)
	if !reflect.DeepEqual(stateOf(e.b), stateOf(restored)) {
		t.Fatalf("restored book differs:\n orig %+v\n rest %+v", stateOf(e.b), stateOf(restored))
	}

	// The same later commands give the same results on both, including the
	// order in which a bounded expiry sweep picks DAY orders.
	run := func(b *Book) []string {
		var log []string
		id := uint64(100)
		sub := func(o *Order, now int64) {
			id++
			o.ID = id
			if err := b.Prepare(o); err != nil {
				log = append(log, err.Error())
				return
			}
			out, err := b.Submit(o, now)
			if err != nil {
				log = append(log, err.Error())
				return
			}
			for _, f := range out.Fills {
				log = append(log, fmt.Sprintf("fill %d x%d maker %d taker %d", f.Price, f.Qty, f.Maker.ID, f.Taker.ID))
			}
		}
		sub(lim(carol, Buy, 20, 10_200), tNow+tSec)
		sub(lim(alice, Sell, 6, 9_850), tNow+2*tSec)
		for _, max := range []int{1, 100} {
			for _, o := range b.ExpireDue(tEOD, max) {
				log = append(log, fmt.Sprintf("expired %d (max %d)", o.ID, max))
			}
		}
		sub(mkt(bob, Sell, 50), tEOD+tSec)
		return log
	}
	l1, l2 := run(e.b), run(restored)
	if !slices.Equal(l1, l2) {
		t.Fatalf("diverged after restore:\n orig %v\n rest %v", l1, l2)
	}
	if !reflect.DeepEqual(stateOf(e.b), stateOf(restored)) {
		t.Fatal("books differ after the same commands")
	}
}

// restoreCopy rebuilds a book from copies of b's open orders the way the
// state machine does after a restart: a new book with the stored stats, and
// the open orders restored in Seq order.
func restoreCopy(t testing.TB, b *Book) *Book {
	t.Helper()
	nb := NewBook(b.Symbol, b.Ref)
	nb.Last, nb.TradeSeq, nb.NextSeq = b.Last, b.TradeSeq, b.NextSeq
	var open []*Order
	for _, o := range b.RestingOrders() {
		cp := *o
		cp.level = nil
		open = append(open, &cp)
	}
	slices.SortFunc(open, func(x, y *Order) int { return int(x.Seq) - int(y.Seq) })
	for _, o := range open {
		if err := nb.Restore(o); err != nil {
			t.Fatalf("Restore(%d): %v", o.ID, err)
		}
	}
	return nb
}

func TestRestoreRefusesFinishedOrders(t *testing.T) {
	b := NewBook("TEST", tRef)
	for _, st := range []Status{Filled, Cancelled, Expired, Rejected} {
		o := lim(1, Buy, 1, 100)
		o.ID, o.Status = 1, st
		wantErr(t, b.Restore(o), ErrBadOrder)
	}
}
