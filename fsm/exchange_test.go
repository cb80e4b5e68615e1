package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// Exchange tests through ApplyBatch: a seeded random stream of exchange
// commands with the money and book invariants checked after every batch,
// plus replays, rejections, reopen, snapshot/restore and determinism.
//
// HATS_MARKET_SEED=N replays one seed; HATS_MARKET_LONG=1 runs longer.

var exSymbols = []struct {
	sym string
	ref int64
}{{"AAA", 10_000}, {"BBB.X", 2_500}}

func setInstrument(sym string, ref int64) *Command {
	return &Command{Type: TypeSetInstrument, Symbol: sym, Name: "Test " + sym, Price: ref}
}

func placeCmd(acct uint64, sym string, side market.Side, typ market.Type, tif market.TIF, qty, limit, stop int64) *Command {
	return &Command{Type: TypePlaceOrder, Account: acct, Symbol: sym, Side: uint8(side), OrdType: uint8(typ), TIF: uint8(tif), Qty: qty, Limit: limit, Stop: stop}
}

func limitCmd(acct uint64, sym string, side market.Side, qty, price int64) *Command {
	return placeCmd(acct, sym, side, market.Limit, market.GTC, qty, price, 0)
}

func sharesCmd(typ Type, acct uint64, sym string, qty int64) *Command {
	return &Command{Type: typ, Account: acct, Symbol: sym, Qty: qty}
}

// exSetup lists the instruments and registers four funded traders holding
// shares of each symbol.
func exSetup(h *harness) []uint64 {
	h.t.Helper()
	var cmds []*Command
	for _, s := range exSymbols {
		cmds = append(cmds, setInstrument(s.sym, s.ref))
	}
	for _, r := range h.apply(cmds...) {
		wantCode(h.t, r, CodeOK)
	}
	var ids []uint64
	for _, u := range []string{"ann", "bob", "cat", "dan"} {
		ids = append(ids, h.register(u))
	}
	return ids
}

// ---------------------------------------------------------------- invariants

// exLedger is what the commands put in and took out, from their results,
// in total and per account.
type exLedger struct {
	cash   int64
	shares map[string]int64
	acct   map[uint64]*exAcct
}

type exAcct struct {
	cash   int64
	shares map[string]int64
}

func newLedger() *exLedger { return &exLedger{shares: map[string]int64{}, acct: map[uint64]*exAcct{}} }

func (l *exLedger) of(id uint64) *exAcct {
	a, ok := l.acct[id]
	if !ok {
		a = &exAcct{shares: map[string]int64{}}
		l.acct[id] = a
	}
	return a
}

// note records the effect of an applied command on the ledger.
func (l *exLedger) note(c *Command, r *Result) {
	if r == nil || r.Code != CodeOK || r.Replay {
		return
	}
	a := l.of(c.Account)
	switch c.Type {
	case TypeDeposit:
		l.cash += c.Amount
		a.cash += c.Amount
	case TypeWithdraw:
		l.cash -= c.Amount
		a.cash -= c.Amount
	case TypeDepositShares:
		l.shares[c.Symbol] += c.Qty
		a.shares[c.Symbol] += c.Qty
	case TypeWithdrawShares:
		l.shares[c.Symbol] -= c.Qty
		a.shares[c.Symbol] -= c.Qty
	}
}

// checkExchange verifies every invariant the state must keep between
// batches; it returns a description of the first violation, or "".
func checkExchange(t testing.TB, f *FSM, l *exLedger) {
	t.Helper()
	if msg := exchangeViolation(f, l); msg != "" {
		t.Fatal(msg)
	}
}

func exchangeViolation(f *FSM, l *exLedger) (msg string) {
	fail := func(format string, args ...any) {
		if msg == "" {
			msg = fmt.Sprintf(format, args...)
		}
	}
	type posKey struct {
		acct uint64
		sym  string
	}
	books := map[string]*BookSnapshot{}
	for _, s := range exSymbols {
		bs, ok := f.Book(s.sym, 1<<20)
		if !ok {
			fail("no book for %s", s.sym)
			return
		}
		books[s.sym] = bs
	}
	err := f.View(func(v *View) error {
		// Conservation: what came in minus what went out, plus the house
		// market maker's funding (an ordinary deposit in its statement).
		wantCash := l.cash
		wantShares := map[string]int64{}
		for k, q := range l.shares {
			wantShares[k] = q
		}
		meta := v.tx.Bucket(bMeta)
		if getU64(meta, kHouse) != 0 {
			wantCash += HouseCash
		}
		for _, s := range exSymbols {
			if meta.Get(append(append([]byte(nil), houseFunded...), s.sym...)) != nil {
				wantShares[s.sym] += HouseSharesEach
			}
		}
		// Balances per account: what it put in and took out, plus what the
		// tape says it sold, minus what it bought.
		wantAcct := map[uint64]*exAcct{}
		for id, a := range l.acct {
			w := &exAcct{cash: a.cash, shares: map[string]int64{}}
			for k, q := range a.shares {
				w.shares[k] = q
			}
			wantAcct[id] = w
		}
		of := func(id uint64) *exAcct {
			if wantAcct[id] == nil {
				wantAcct[id] = &exAcct{shares: map[string]int64{}}
			}
			return wantAcct[id]
		}
		if house := getU64(meta, kHouse); house != 0 {
			of(house).cash += HouseCash
			for _, s := range exSymbols {
				if meta.Get(append(append([]byte(nil), houseFunded...), s.sym...)) != nil {
					of(house).shares[s.sym] += HouseSharesEach
				}
			}
		}
		for _, s := range exSymbols {
			for _, tr := range v.Trades(s.sym, 0, 0, 0) {
				n := tr.Price * tr.Qty
				of(tr.Buyer).cash -= n
				of(tr.Buyer).shares[s.sym] += tr.Qty
				of(tr.Seller).cash += n
				of(tr.Seller).shares[s.sym] -= tr.Qty
			}
		}
		for id, w := range wantAcct {
			a, ok := v.Account(id)
			if !ok {
				if w.cash != 0 {
					fail("no account %d, but the ledger and tape give it %d cash", id, w.cash)
				}
				continue
			}
			if int64(a.Cash) != w.cash {
				fail("account %d holds %d cash; deposits, withdrawals and the tape give %d", id, a.Cash, w.cash)
			}
			for _, s := range exSymbols {
				if p := v.Position(id, s.sym); p.Qty != w.shares[s.sym] {
					fail("account %d holds %d %s; transfers and the tape give %d", id, p.Qty, s.sym, w.shares[s.sym])
				}
			}
		}

		cashTotal, _, shares := v.Totals()
		if cashTotal != wantCash {
			fail("total cash %d, deposits minus withdrawals %d", cashTotal, wantCash)
		}
		for _, s := range exSymbols {
			if shares[s.sym] != wantShares[s.sym] {
				fail("total %s shares %d, deposited minus withdrawn %d", s.sym, shares[s.sym], wantShares[s.sym])
			}
		}

		// Reservations equal what the open orders need; open orders are
		// sane; the in-memory books hold exactly the resting ones.
		wantRes := map[uint64]int64{}
		wantPosRes := map[posKey]int64{}
		type lvKey struct {
			sym   string
			side  market.Side
			price int64
		}
		levels := map[lvKey]market.Level{}
		for _, o := range v.OpenOrders() {
			if !o.Status.Active() || o.Filled < 0 || o.Filled >= o.Qty {
				fail("open order %d: status %s filled %d of %d", o.ID, o.Status, o.Filled, o.Qty)
			}
			if (o.Filled > 0) != (o.Status == market.PartiallyFilled) {
				fail("open order %d: status %s with %d filled", o.ID, o.Status, o.Filled)
			}
			if o.Side == market.Buy {
				wantRes[o.Account] += o.Remaining() * o.ReservePrice()
			} else {
				wantPosRes[posKey{o.Account, o.Symbol}] += o.Remaining()
			}
			if o.Type == market.Limit || o.Type == market.StopLimit && o.Triggered {
				k := lvKey{o.Symbol, o.Side, o.Limit}
				lv := levels[k]
				lv.Price, lv.Qty, lv.Orders = o.Limit, lv.Qty+o.Remaining(), lv.Orders+1
				levels[k] = lv
			}
		}
		for _, s := range exSymbols {
			bs := books[s.sym]
			if bs.Crossed {
				fail("%s book crossed: %v / %v", s.sym, bs.Bids, bs.Asks)
			}
			n := 0
			for _, side := range []struct {
				s  market.Side
				lv []market.Level
			}{{market.Buy, bs.Bids}, {market.Sell, bs.Asks}} {
				for i, lv := range side.lv {
					n++
					if levels[lvKey{s.sym, side.s, lv.Price}] != lv {
						fail("%s %s level %+v; stored open orders make %+v", s.sym, side.s, lv, levels[lvKey{s.sym, side.s, lv.Price}])
					}
					if i > 0 && (side.s == market.Buy) != (lv.Price < side.lv[i-1].Price) {
						fail("%s %s levels out of order", s.sym, side.s)
					}
				}
			}
			for k := range levels {
				if k.sym == s.sym {
					n--
				}
			}
			if n != 0 {
				fail("%s: in-memory book and stored open orders have different levels", s.sym)
			}

			// Tape: per-symbol trade sequence without gaps.
			st, _ := v.BookStats(s.sym)
			trades := v.Trades(s.sym, 0, 0, 0)
			for i, tr := range trades {
				if tr.Seq != uint64(i+1) || tr.Symbol != s.sym || tr.Qty <= 0 || tr.Price <= 0 || tr.Buyer == tr.Seller {
					fail("%s trade %d: %+v", s.sym, i+1, tr)
				}
			}
			if uint64(len(trades)) != st.TradeSeq || st.TradeSeq != bs.TradeSeq || st.Last != bs.Last {
				fail("%s: %d trades, stats seq %d last %d, book seq %d last %d", s.sym, len(trades), st.TradeSeq, st.Last, bs.TradeSeq, bs.Last)
			}
		}

		// Accounts: nothing negative, reservations match, statements
		// reconcile.
		return v.tx.Bucket(bTrader).Bucket(bAccounts).ForEach(func(k, _ []byte) error {
			a, _ := v.Account(binary.BigEndian.Uint64(k))
			if a.Cash < 0 || a.Reserved < 0 || a.Available() < 0 {
				fail("account %d: cash %d reserved %d", a.ID, a.Cash, a.Reserved)
			}
			if int64(a.Reserved) != wantRes[a.ID] {
				fail("account %d reserves %d cash, open buys need %d", a.ID, a.Reserved, wantRes[a.ID])
			}
			stmt := v.Statement(a.ID, 0, 0)
			var sum int64
			qty := map[string]int64{}
			for i, e := range stmt {
				sum += e.Cash
				if e.Seq != uint64(i+1) || e.CashAfter != sum {
					fail("account %d statement line %d: seq %d cash after %d, running sum %d", a.ID, i+1, e.Seq, e.CashAfter, sum)
				}
				if e.Symbol != "" {
					qty[e.Symbol] += e.Qty
					if e.SharesAfter != qty[e.Symbol] {
						fail("account %d statement line %d: shares after %d, running sum %d", a.ID, i+1, e.SharesAfter, qty[e.Symbol])
					}
				}
			}
			if sum != int64(a.Cash) {
				fail("account %d: statement cash sums to %d, account holds %d", a.ID, sum, a.Cash)
			}
			seen := map[string]bool{}
			for _, p := range v.Positions(a.ID) {
				seen[p.Symbol] = true
				if p.Qty < 0 || p.Reserved < 0 || p.Available() < 0 {
					fail("account %d %s: qty %d reserved %d", a.ID, p.Symbol, p.Qty, p.Reserved)
				}
				if p.Reserved != wantPosRes[posKey{a.ID, p.Symbol}] {
					fail("account %d %s: reserves %d shares, open sells need %d", a.ID, p.Symbol, p.Reserved, wantPosRes[posKey{a.ID, p.Symbol}])
				}
				if p.Qty != qty[p.Symbol] {
					fail("account %d %s: holds %d, statement sums to %d", a.ID, p.Symbol, p.Qty, qty[p.Symbol])
				}
			}
			for sym, q := range qty {
				if !seen[sym] && q != 0 {
					fail("account %d: statement holds %d %s, no position", a.ID, q, sym)
				}
			}
			for pk, q := range wantPosRes {
				if pk.acct == a.ID && q != 0 && !seen[pk.sym] {
					fail("account %d: open sells of %d %s without a position", a.ID, q, pk.sym)
				}
			}
			// Every order of the account is sane.
			for _, o := range v.Orders(a.ID, false, "", 0) {
				if o.Filled < 0 || o.Filled > o.Qty && o.Status != market.Rejected {
					fail("order %d: filled %d of %d", o.ID, o.Filled, o.Qty)
				}
				if o.Status == market.Rejected && (o.RejectCode == "" || o.Filled != 0) {
					fail("rejected order %d: code %q filled %d", o.ID, o.RejectCode, o.Filled)
				}
				if o.Status == market.Filled && o.Filled != o.Qty {
					fail("filled order %d: %d of %d", o.ID, o.Filled, o.Qty)
				}
			}
			return nil
		})
	})
	if err != nil {
		fail("View: %v", err)
	}
	return msg
}

// ---------------------------------------------------------------- stream

type exGen struct {
	r        *rand.Rand
	accts    []uint64
	orders   []uint64            // IDs of placed orders
	owner    map[uint64]uint64   // order ID -> account
	open     []uint64            // orders open before the current batch
	clientID map[uint64][]string // client IDs used, per account
	nextCID  int
	tickSeq  uint64
	refs     map[string]int64 // reference prices, for ticks
}

func newExGen(seed int64, accts []uint64) *exGen {
	g := &exGen{r: rand.New(rand.NewSource(seed)), accts: accts, clientID: map[uint64][]string{}, refs: map[string]int64{}, owner: map[uint64]uint64{}}
	for _, s := range exSymbols {
		g.refs[s.sym] = s.ref
	}
	return g
}

func (g *exGen) pick(weights ...int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := g.r.Intn(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	panic("unreachable")
}

func (g *exGen) price(ref int64) int64 {
	tick := max(ref/400, 1)
	if g.r.Intn(20) == 0 {
		return max(ref+int64(g.r.Intn(101)-50)*tick, 1) // around and beyond the collar
	}
	return max(ref+int64(g.r.Intn(21)-10)*tick, 1)
}

func (g *exGen) orderID() uint64 {
	if len(g.open) > 0 && g.r.Intn(10) < 6 {
		return g.open[g.r.Intn(len(g.open))]
	}
	if len(g.orders) == 0 || g.r.Intn(20) == 0 {
		return uint64(g.r.Intn(5) + 900_000)
	}
	if g.r.Intn(3) > 0 {
		return g.orders[len(g.orders)-1-g.r.Intn(min(len(g.orders), 25))]
	}
	return g.orders[g.r.Intn(len(g.orders))]
}

// actor is who cancels or amends an order: mostly its owner, sometimes
// someone else (who must be refused).
func (g *exGen) actor(acct, id uint64) uint64 {
	if own, ok := g.owner[id]; ok && g.r.Intn(6) > 0 {
		return own
	}
	return acct
}

// command draws one exchange command. ref gives a symbol's current
// reference price (last trade, else the instrument's).
func (g *exGen) command(ref func(string) int64) *Command {
	acct := g.accts[g.r.Intn(len(g.accts))]
	sym := exSymbols[g.r.Intn(len(exSymbols))].sym
	if g.r.Intn(200) == 0 {
		sym = "NOPE"
	}
	switch g.pick(7, 4, 5, 3, 56, 10, 11, 3, 1) {
	case 0:
		amt := g.r.Int63n(5_000_000) + 1
		if g.r.Intn(30) == 0 {
			amt = -amt
		}
		return deposit(acct, trader.Cents(amt))
	case 1:
		return withdraw(acct, trader.Cents(g.r.Int63n(2_000_000)+1))
	case 2:
		return sharesCmd(TypeDepositShares, acct, sym, g.r.Int63n(300)+1)
	case 3:
		return sharesCmd(TypeWithdrawShares, acct, sym, g.r.Int63n(100)+1)
	case 4:
		return g.order(acct, sym, ref(sym))
	case 5:
		id := g.orderID()
		return &Command{Type: TypeCancelOrder, Account: g.actor(acct, id), OrderID: id}
	case 6:
		id := g.orderID()
		c := &Command{Type: TypeAmendOrder, Account: g.actor(acct, id), OrderID: id}
		if g.r.Intn(2) == 0 {
			c.Qty = g.r.Int63n(30) + 1
		}
		if g.r.Intn(2) == 0 || c.Qty == 0 {
			c.Limit = g.price(ref(sym))
		}
		return c
	case 7:
		// A tick from the Market Engine: new references, sometimes with
		// the house market maker quoting.
		c := &Command{Type: TypeTick, TickSeq: g.tickSeq + 1, FeedKind: "sim"}
		if g.r.Intn(10) == 0 {
			c.TickSeq = g.tickSeq // stale
		}
		for _, s := range exSymbols {
			p := g.refs[s.sym] + int64(g.r.Intn(11)-5)*max(g.refs[s.sym]/200, 1)
			c.Prices = append(c.Prices, market.TickPrice{Symbol: s.sym, Price: max(p, 1)})
		}
		if g.r.Intn(2) == 0 {
			c.MMSize, c.MMSpread = int64(g.r.Intn(20)+1), 40
		}
		return c
	default:
		// An order from an account that does not exist.
		return g.order(999, sym, ref(sym))
	}
}

func (g *exGen) order(acct uint64, sym string, ref int64) *Command {
	side := market.Side(1 + g.r.Intn(2))
	typ := []market.Type{market.Limit, market.Market, market.Stop, market.StopLimit}[g.pick(60, 15, 12, 13)]
	tif := []market.TIF{market.GTC, market.DAY, market.IOC, market.FOK}[g.pick(40, 30, 18, 12)]
	if typ == market.Market && g.r.Intn(15) > 0 {
		tif = []market.TIF{market.IOC, market.FOK}[g.r.Intn(2)]
	}
	c := placeCmd(acct, sym, side, typ, tif, g.r.Int63n(25)+1, 0, 0)
	switch typ {
	case market.Limit:
		c.Limit = g.price(ref)
	case market.Stop:
		c.Stop = g.price(ref)
	case market.StopLimit:
		c.Stop = g.price(ref)
		c.Limit = g.price(c.Stop)
	}
	c.PostOnly = g.r.Intn(12) == 0
	switch g.pick(90, 4, 3, 2, 1) {
	case 1:
		c.Qty = g.r.Int63n(300) + 1
	case 2:
		c.Qty = -g.r.Int63n(2)
	case 3:
		c.Qty = market.MaxQuantity + 1
	case 4:
		c.Limit = c.Limit*100 + 7 // way off; may exceed MaxPrice
	}
	switch {
	case len(g.clientID[acct]) > 0 && g.r.Intn(15) == 0:
		// A retry with a client ID already used: must return the first.
		ids := g.clientID[acct]
		c.ClientID = ids[g.r.Intn(len(ids))]
	case g.r.Intn(3) == 0:
		g.nextCID++
		c.ClientID = "cid-" + strconv.Itoa(g.nextCID)
		g.clientID[acct] = append(g.clientID[acct], c.ClientID)
	}
	return c
}

// exRun applies a generated stream to a set of FSMs in lockstep: the same
// log entries to each, checking identical results, identical hashes and the
// invariants after every batch. between, if set, runs after each batch.
type exRun struct {
	t       testing.TB
	seed    int64
	hs      []*harness // hs[0] drives the generator
	g       *exGen
	ledger  *exLedger
	batches int
	stats   map[string]int
	packed  bool // the last FSM gets each batch as one TypeBatch entry
}

func newExRun(t testing.TB, seed int64, n int) *exRun {
	run := &exRun{t: t, seed: seed, ledger: newLedger(), stats: map[string]int{}}
	var accts []uint64
	for i := 0; i < n; i++ {
		h := newHarness(t)
		accts = exSetup(h)
		run.hs = append(run.hs, h)
	}
	run.g = newExGen(seed, accts)
	return run
}

func (run *exRun) fatalf(format string, args ...any) {
	run.t.Helper()
	run.t.Fatalf("seed %d (HATS_MARKET_SEED=%d), batch %d: %s", run.seed, run.seed, run.batches, fmt.Sprintf(format, args...))
}

func (run *exRun) ref(sym string) int64 {
	bs, ok := run.hs[0].f.Book(sym, 0)
	if !ok {
		return 1_000
	}
	if bs.Last > 0 {
		return bs.Last
	}
	return bs.Ref
}

// batch generates and applies one batch to every FSM.
func (run *exRun) batch() {
	run.t.Helper()
	run.batches++
	g := run.g
	h0 := run.hs[0]
	if g.r.Intn(25) == 0 {
		// Jump to (just past) the end of the UTC day: DAY orders expire.
		h0.now = market.EndOfUTCDay(h0.now) + int64(g.r.Intn(3))*int64(time.Second)
	}
	g.open = g.open[:0]
	_ = h0.f.View(func(v *View) error {
		for _, o := range v.OpenOrders() {
			g.open = append(g.open, o.ID)
			g.owner[o.ID] = o.Account
		}
		return nil
	})
	n := 1 + g.r.Intn(24)
	cmds := make([]*Command, n)
	for i := range cmds {
		cmds[i] = g.command(run.ref)
	}
	logs := h0.logs(cmds...)
	for _, h := range run.hs[1:] {
		h.next, h.now = h0.next, h0.now
	}
	var first []*Result
	for i, h := range run.hs {
		packed := run.packed && i == len(run.hs)-1
		var res []*Result
		if packed {
			res = exApplyPacked(run.t, h.f, logs)
		} else {
			res = exApply(run.t, h.f, logs)
		}
		if i == 0 {
			first = res
			continue
		}
		for j := range res {
			a, b := *res[j], *first[j]
			if packed { // the whole batch has one index
				a.Index, b.Index = 0, 0
			}
			if !bytes.Equal(EncodeResult(&a), EncodeResult(&b)) {
				run.fatalf("FSM %d result %d differs: %+v vs %+v", i, j, res[j], first[j])
			}
		}
	}
	for i, r := range first {
		c := cmds[i]
		run.ledger.note(c, r)
		run.count(c, r)
		if c.Type == TypePlaceOrder && r.Order != nil && !r.Replay {
			g.orders = append(g.orders, r.Order.ID)
			g.owner[r.Order.ID] = r.Order.Account
		}
		if c.Type == TypeTick && r.Code == CodeOK {
			g.tickSeq = c.TickSeq
			for _, p := range c.Prices {
				g.refs[p.Symbol] = p.Price
			}
		}
		run.checkResult(c, r)
	}
	if msg := exchangeViolation(h0.f, run.ledger); msg != "" {
		run.fatalf("%s", msg)
	}
	h := hashOf(run.t, h0.f)
	for i, o := range run.hs[1:] {
		if got := hashOf(run.t, o.f); got != h {
			run.fatalf("FSM %d hash %s, FSM 0 %s", i+1, got, h)
		}
		if !sameBooks(run.t, o.f, h0.f) {
			run.fatalf("FSM %d books differ from FSM 0", i+1)
		}
	}
}

func (run *exRun) count(c *Command, r *Result) {
	key := c.Type.String()
	switch {
	case r.Replay:
		key += " replay"
	case r.Code != CodeOK:
		key += " " + r.Code
	case c.Type == TypePlaceOrder:
		key += " " + r.Order.Status.String()
	}
	run.stats[key]++
}

// checkResult checks what one result says against the stored state.
func (run *exRun) checkResult(c *Command, r *Result) {
	if c.Type != TypePlaceOrder || r.Order == nil {
		return
	}
	o := r.Order
	var stored *market.Order
	var byCID *market.Order
	_ = run.hs[0].f.View(func(v *View) error {
		stored, _ = v.Order(o.ID)
		if c.ClientID != "" {
			byCID, _ = v.OrderByClientID(c.Account, c.ClientID)
		}
		return nil
	})
	switch {
	case stored == nil:
		run.fatalf("placed order %d not stored", o.ID)
	case c.ClientID != "" && (byCID == nil || byCID.ID != o.ID):
		run.fatalf("client ID %q does not find order %d", c.ClientID, o.ID)
	case o.Account != c.Account:
		run.fatalf("order %d of account %d returned to %d", o.ID, o.Account, c.Account)
	}
	if r.Code != CodeOK {
		if o.Status != market.Rejected || o.RejectCode != r.Code || stored.Status != market.Rejected || stored.RejectCode != r.Code {
			run.fatalf("rejected place (%s): result order %s/%q, stored %s/%q", r.Code, o.Status, o.RejectCode, stored.Status, stored.RejectCode)
		}
	}
}

// sameBooks compares two FSMs' in-memory books level by level.
func sameBooks(t testing.TB, a, b *FSM) bool {
	t.Helper()
	for _, s := range exSymbols {
		x, okx := a.Book(s.sym, 1<<20)
		y, oky := b.Book(s.sym, 1<<20)
		if okx != oky || !slices.Equal(x.Bids, y.Bids) || !slices.Equal(x.Asks, y.Asks) ||
			x.Last != y.Last || x.Ref != y.Ref || x.TradeSeq != y.TradeSeq || x.Crossed || y.Crossed {
			t.Logf("%s: %+v\nvs %+v", s.sym, x, y)
			return false
		}
	}
	return true
}

func exSeeds(t *testing.T) (seeds []int64, batches int) {
	batches = 150
	if os.Getenv("HATS_MARKET_LONG") == "1" {
		batches = 600 // the checks scan the whole state after each batch
	}
	if v := os.Getenv("HATS_MARKET_SEED"); v != "" {
		seed, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("HATS_MARKET_SEED=%q: %v", v, err)
		}
		return []int64{seed}, batches
	}
	n := 3
	switch {
	case os.Getenv("HATS_MARKET_LONG") == "1":
		n = 10
	case testing.Short():
		n = 1
	}
	base := time.Now().UnixNano()
	for i := range n {
		seeds = append(seeds, base+int64(i))
	}
	return seeds, batches
}

// TestExchangeRandomStreamInvariants runs random streams through two FSMs
// in lockstep, one of which is closed and reopened now and then, and
// checks the invariants, identical results and identical hashes and books
// after every batch. At the end a snapshot is restored into a fresh FSM,
// which must match and then keep matching under more commands.
func TestExchangeRandomStreamInvariants(t *testing.T) {
	seeds, batches := exSeeds(t)
	total := map[string]int{}
	for _, seed := range seeds {
		run := newExRun(t, seed, 2)
		reopened := 0
		for i := 0; i < batches; i++ {
			run.batch()
			if run.g.r.Intn(20) == 0 {
				// Restart the second FSM: books are rebuilt from bbolt.
				h := run.hs[1]
				path := h.f.path
				if err := h.f.Close(); err != nil {
					t.Fatal(err)
				}
				h.f = mustOpenPath(t, path)
				reopened++
				if !sameBooks(t, h.f, run.hs[0].f) || hashOf(t, h.f) != hashOf(t, run.hs[0].f) {
					run.fatalf("reopened FSM differs")
				}
			}
		}
		// Snapshot → restore into a new FSM: same hash, same books, and the
		// same future.
		data := snapshotBytes(t, run.hs[0].f)
		c := newHarness(t)
		if err := c.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if hashOf(t, c.f) != hashOf(t, run.hs[0].f) || !sameBooks(t, c.f, run.hs[0].f) {
			run.fatalf("restored FSM differs from its source")
		}
		run.hs = append(run.hs, c)
		for range 30 {
			run.batch()
		}
		if reopened == 0 {
			// Make sure the reopen path ran at least once per seed.
			h := run.hs[1]
			path := h.f.path
			_ = h.f.Close()
			h.f = mustOpenPath(t, path)
			run.batch()
		}
		for k, v := range run.stats {
			total[k] += v
		}
	}
	for _, k := range []string{
		"place_order filled", "place_order open", "place_order partially_filled", "place_order cancelled", "place_order replay",
		"place_order " + CodeInsufficientFunds, "place_order " + CodeInsufficientShares, "place_order " + CodeBeyondCollar,
		"place_order " + CodeCannotFill, "place_order " + CodeWouldTake, "place_order " + CodeBadQuantity, "place_order " + CodeUnknownSymbol,
		"place_order " + CodeUnknownAccount, "cancel_order", "cancel_order " + CodeNotOwner, "cancel_order " + CodeOrderDone,
		"amend_order", "amend_order " + CodeNotOwner, "tick", "withdraw_shares", "deposit_shares",
	} {
		if total[k] == 0 {
			t.Errorf("the stream never produced %q; stats %v", k, total)
		}
	}
	if testing.Verbose() {
		t.Logf("seeds %v, %d batches each: %v", seeds, batches, total)
	}
}

// TestExchangeDeterminism: two FSMs fed the same stream end with the same
// hash; a different stream gives a different one.
// TestExchangeBatchEntriesMatchSingleEntries: the random stream applied one
// entry per command and packed into one batch entry per step (the leader's
// group commit) gives the same results and the same state after every
// step. Records changed by several commands of one entry are written once
// at its end (fsm/hot.go); this is what says that changes nothing.
func TestExchangeBatchEntriesMatchSingleEntries(t *testing.T) {
	seeds, batches := exSeeds(t)
	for _, seed := range seeds {
		run := newExRun(t, seed, 2)
		run.packed = true
		for range batches {
			run.batch()
		}
	}
}

func TestExchangeDeterminism(t *testing.T) {
	run := newExRun(t, 42, 2)
	for range 60 {
		run.batch()
	}
	other := newExRun(t, 43, 1)
	for range 60 {
		other.batch()
	}
	if hashOf(t, run.hs[0].f) == hashOf(t, other.hs[0].f) {
		t.Fatal("different streams gave the same hash")
	}
}

// ---------------------------------------------------------------- focused

func exHarness(t *testing.T) (*harness, []uint64, *exLedger) {
	h := newHarness(t)
	ids := exSetup(h)
	l := newLedger()
	var cmds []*Command
	for _, id := range ids {
		cmds = append(cmds, deposit(id, 1_000_000_00))
		for _, s := range exSymbols {
			cmds = append(cmds, sharesCmd(TypeDepositShares, id, s.sym, 1_000))
		}
	}
	for i, r := range h.apply(cmds...) {
		wantCode(t, r, CodeOK)
		l.note(cmds[i], r)
	}
	return h, ids, l
}

func TestExchangeClientIDReplay(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	c := limitCmd(ann, "AAA", market.Buy, 10, 9_900)
	c.ClientID = "order-1"
	first := h.exApply1(c)
	wantCode(t, first, CodeOK)
	before := hashOf(t, h.f)

	// The same client ID again, even with other fields, returns the first
	// order and changes nothing.
	again := limitCmd(ann, "AAA", market.Sell, 5, 10_100)
	again.ClientID = "order-1"
	r := h.exApply1(again)
	if !r.Replay || r.Order == nil || r.Order.ID != first.Order.ID || r.Order.Side != market.Buy || r.Code != CodeOK {
		t.Fatalf("repeat: %+v (order %+v), want a replay of order %d", r, r.Order, first.Order.ID)
	}
	if got := hashOf(t, h.f); got != before {
		t.Fatal("a client-ID repeat changed the state")
	}
	// The replay reflects the order's current state.
	wantCode(t, h.exApply1(limitCmd(bob, "AAA", market.Sell, 4, 9_900)), CodeOK)
	r = h.exApply1(again)
	if !r.Replay || r.Order.Filled != 4 || r.Order.Status != market.PartiallyFilled {
		t.Fatalf("replay after a fill: %+v", r.Order)
	}
	// Client IDs are per account.
	other := limitCmd(bob, "AAA", market.Buy, 1, 9_000)
	other.ClientID = "order-1"
	r = h.exApply1(other)
	if r.Replay || r.Order.ID == first.Order.ID {
		t.Fatal("another account's client ID collided")
	}
	// A rejected order replays its rejection.
	bad := limitCmd(ann, "AAA", market.Buy, 10, 50_000) // beyond the collar
	bad.ClientID = "order-2"
	r1 := h.exApply1(bad)
	wantCode(t, r1, CodeBeyondCollar)
	r2 := h.exApply1(bad)
	if !r2.Replay || r2.Code != CodeBeyondCollar || r2.Order.ID != r1.Order.ID || r2.Message == "" {
		t.Fatalf("rejected repeat: %+v", r2)
	}
	var found *market.Order
	_ = h.f.View(func(v *View) error { found, _ = v.OrderByClientID(ann, "order-2"); return nil })
	if found == nil || found.Status != market.Rejected || found.RejectCode != CodeBeyondCollar {
		t.Fatalf("order by client ID: %+v", found)
	}
	checkExchange(t, h.f, l)
}

// TestExchangeRejectionsChangeNoBalance: each bad order is stored as
// rejected with a code, and no balance, reservation or book changes.
func TestExchangeRejectionsChangeNoBalance(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	// Some resting liquidity and one trade (last 10000).
	for _, c := range []*Command{
		limitCmd(bob, "AAA", market.Sell, 10, 10_100),
		limitCmd(bob, "AAA", market.Sell, 1, 10_000),
		limitCmd(ann, "AAA", market.Buy, 1, 10_000),
		limitCmd(bob, "AAA", market.Buy, 10, 9_900),
	} {
		wantCode(t, h.exApply1(c), CodeOK)
	}
	postOnly := limitCmd(ann, "AAA", market.Buy, 1, 10_100)
	postOnly.PostOnly = true
	iocPost := limitCmd(ann, "AAA", market.Buy, 1, 9_000)
	iocPost.PostOnly, iocPost.TIF = true, uint8(market.IOC)
	cases := []struct {
		c    *Command
		code string
	}{
		{limitCmd(ann, "ZZZ", market.Buy, 1, 100), CodeUnknownSymbol},
		{limitCmd(ann, "AAA", market.Buy, 0, 10_000), CodeBadQuantity},
		{limitCmd(ann, "AAA", market.Buy, -5, 10_000), CodeBadQuantity},
		{limitCmd(ann, "AAA", market.Buy, market.MaxQuantity+1, 10_000), CodeBadQuantity},
		{limitCmd(ann, "AAA", market.Buy, 1, 0), CodeBadPrice},
		{limitCmd(ann, "AAA", market.Buy, 1, market.MaxPrice+1), CodeBadPrice},
		{limitCmd(ann, "AAA", market.Buy, 1, 11_001), CodeBeyondCollar},
		{limitCmd(ann, "AAA", market.Sell, 1, 8_999), CodeBeyondCollar},
		{limitCmd(ann, "AAA", market.Buy, 100_000, 10_000), CodeInsufficientFunds},
		{limitCmd(ann, "AAA", market.Sell, 1_002, 10_500), CodeInsufficientShares},
		{placeCmd(ann, "AAA", market.Buy, market.Market, market.IOC, 100_000, 0, 0), CodeInsufficientFunds},
		{placeCmd(ann, "AAA", market.Buy, market.Market, market.GTC, 1, 0, 0), CodeBadOrder},
		{placeCmd(ann, "AAA", market.Buy, market.Stop, market.GTC, 1, 0, 0), CodeBadPrice}, // stop without a price
		{placeCmd(ann, "AAA", market.Buy, market.Limit, market.FOK, 20, 10_100, 0), CodeCannotFill},
		{placeCmd(ann, "AAA", market.Buy, market.Market, market.FOK, 20, 0, 0), CodeCannotFill},
		{placeCmd(bob, "AAA", market.Buy, market.Limit, market.FOK, 1, 10_100, 0), CodeCannotFill}, // own orders do not count
		{postOnly, CodeWouldTake},
		{iocPost, CodeBadOrder},
		{placeCmd(ann, "AAA", 7, market.Limit, market.GTC, 1, 100, 0), CodeBadOrder},
		{placeCmd(ann, "AAA", market.Buy, 9, market.GTC, 1, 100, 0), CodeBadOrder},
		{placeCmd(ann, "AAA", market.Buy, market.Limit, 9, 1, 100, 0), CodeBadOrder},
	}
	for _, c := range cases {
		before := exFingerprint(t, h.f)
		r := h.exApply1(c.c)
		wantCode(t, r, c.code)
		if r.Order == nil || r.Order.Status != market.Rejected || r.Order.RejectCode != c.code || r.Message == "" {
			t.Fatalf("%s: result order %+v message %q", c.code, r.Order, r.Message)
		}
		var stored *market.Order
		_ = h.f.View(func(v *View) error { stored, _ = v.Order(r.Order.ID); return nil })
		if stored == nil || stored.Status != market.Rejected || stored.RejectCode != c.code || stored.Reason == "" {
			t.Fatalf("%s: stored %+v", c.code, stored)
		}
		if after := exFingerprint(t, h.f); after != before {
			t.Fatalf("%s: balances or books changed:\nbefore %s\n after %s", c.code, before, after)
		}
	}
	// Cancels and amends that must fail, changing nothing.
	var annOrder, bobOrder, doneOrder uint64
	r := h.exApply1(limitCmd(ann, "AAA", market.Buy, 2, 9_500))
	annOrder = r.Order.ID
	r = h.exApply1(limitCmd(bob, "AAA", market.Sell, 2, 10_600))
	bobOrder = r.Order.ID
	r = h.exApply1(placeCmd(ann, "AAA", market.Buy, market.Market, market.IOC, 1, 0, 0))
	doneOrder = r.Order.ID
	for _, c := range []struct {
		c    *Command
		code string
	}{
		{&Command{Type: TypeCancelOrder, Account: ann, OrderID: bobOrder}, CodeNotOwner},
		{&Command{Type: TypeCancelOrder, Account: ann, OrderID: 987_654}, CodeUnknownOrder},
		{&Command{Type: TypeCancelOrder, Account: ann, OrderID: doneOrder}, CodeOrderDone},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: bobOrder, Qty: 1}, CodeNotOwner},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: 987_654, Qty: 1}, CodeUnknownOrder},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: doneOrder, Qty: 5}, CodeOrderDone},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: annOrder, Qty: 100_000}, CodeInsufficientFunds},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: annOrder, Limit: 20_000}, CodeBeyondCollar},
		{&Command{Type: TypeAmendOrder, Account: ann, OrderID: annOrder, Qty: -1}, CodeBadQuantity},
	} {
		before := exFingerprint(t, h.f)
		wantCode(t, h.exApply1(c.c), c.code)
		if after := exFingerprint(t, h.f); after != before {
			t.Fatalf("%s: state changed", c.code)
		}
	}
	checkExchange(t, h.f, l)
}

// exFingerprint is every balance, reservation, position, open order and
// book level, as text.
func exFingerprint(t testing.TB, f *FSM) string {
	t.Helper()
	var buf bytes.Buffer
	_ = f.View(func(v *View) error {
		for id := uint64(1); id <= 6; id++ {
			if a, ok := v.Account(id); ok {
				fmt.Fprintf(&buf, "acct %d cash %d res %d; ", id, a.Cash, a.Reserved)
				for _, p := range v.Positions(id) {
					fmt.Fprintf(&buf, "%s %+v; ", p.Symbol, *p)
				}
			}
		}
		for _, o := range v.OpenOrders() {
			fmt.Fprintf(&buf, "open %d %d/%d %s; ", o.ID, o.Filled, o.Qty, o.Status)
		}
		return nil
	})
	for _, s := range exSymbols {
		bs, _ := f.Book(s.sym, 100)
		fmt.Fprintf(&buf, "%s %v %v %d %d; ", s.sym, bs.Bids, bs.Asks, bs.Last, bs.TradeSeq)
	}
	return buf.String()
}

// TestExchangeDayExpiryAfterReopen: the bounded per-command DAY-order
// sweep must pick the same orders on a node that restarted (books rebuilt
// from storage) as on one that did not, even after an amend gave the
// oldest DAY order a new time priority.
func TestExchangeDayExpiryAfterReopen(t *testing.T) {
	a, ids, _ := exHarness(t)
	b, _, _ := exHarness(t)
	ann, bob := ids[0], ids[1]
	var cmds []*Command
	for i := range 12 {
		cmds = append(cmds, placeCmd(ann, "AAA", market.Buy, market.Limit, market.DAY, 1, 9_000+int64(i), 0))
	}
	both := func(cmds ...*Command) {
		t.Helper()
		logs := a.logs(cmds...)
		b.next, b.now = a.next, a.now
		ra, rb := exApply(t, a.f, logs), exApply(t, b.f, logs)
		for i := range ra {
			if !bytes.Equal(EncodeResult(ra[i]), EncodeResult(rb[i])) {
				t.Fatalf("result %d differs: %+v vs %+v", i, ra[i], rb[i])
			}
		}
	}
	both(cmds...)
	both(&Command{Type: TypeAmendOrder, Account: ann, OrderID: 1, Limit: 8_500})
	path := b.f.path
	if err := b.f.Close(); err != nil {
		t.Fatal(err)
	}
	b.f = mustOpenPath(t, path)
	// Past the end of the day; one order command sweeps at most 8.
	a.now = market.EndOfUTCDay(a.now) + int64(time.Second)
	both(limitCmd(bob, "AAA", market.Sell, 1, 10_500))
	if ha, hb := hashOf(t, a.f), hashOf(t, b.f); ha != hb {
		t.Fatalf("restarted node diverged after the expiry sweep: %s vs %s", ha, hb)
	}
	if !sameBooks(t, a.f, b.f) {
		t.Fatal("books differ")
	}
}

// TestExchangeSnapshotRestoreBooks: a restored FSM has the same books and
// hash and continues identically.
func TestExchangeSnapshotRestoreBooks(t *testing.T) {
	run := newExRun(t, 7, 1)
	for range 40 {
		run.batch()
	}
	data := snapshotBytes(t, run.hs[0].f)
	c := newHarness(t)
	if err := c.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if hashOf(t, c.f) != hashOf(t, run.hs[0].f) || !sameBooks(t, c.f, run.hs[0].f) {
		t.Fatal("restored FSM differs")
	}
	run.hs = append(run.hs, c)
	for range 40 {
		run.batch() // compares results, hashes and books after each batch
	}
}

// TestExchangeStatementAndSettlement walks one trade through: cash and
// shares move, reservations release at a better price, the tape and both
// statements record it.
func TestExchangeStatementAndSettlement(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	wantCode(t, h.exApply1(limitCmd(bob, "AAA", market.Sell, 10, 10_000)), CodeOK)
	r := h.exApply1(limitCmd(ann, "AAA", market.Buy, 4, 10_500))
	wantCode(t, r, CodeOK)
	if r.Order.Status != market.Filled || r.Order.AvgFillPrice() != 10_000 {
		t.Fatalf("buy: %+v", r.Order)
	}
	_ = h.f.View(func(v *View) error {
		a, _ := v.Account(ann)
		if a.Cash != 1_000_000_00-40_000 || a.Reserved != 0 {
			t.Fatalf("buyer cash %d reserved %d", a.Cash, a.Reserved)
		}
		b, _ := v.Account(bob)
		if b.Cash != 1_000_000_00+40_000 {
			t.Fatalf("seller cash %d", b.Cash)
		}
		if p := v.Position(ann, "AAA"); p.Qty != 1_004 {
			t.Fatalf("buyer position %+v", p)
		}
		if p := v.Position(bob, "AAA"); p.Qty != 996 || p.Reserved != 6 {
			t.Fatalf("seller position %+v", p)
		}
		tr := v.Trades("AAA", 0, 0, 0)
		if len(tr) != 1 || tr[0].Price != 10_000 || tr[0].Qty != 4 || tr[0].Buyer != ann || tr[0].Seller != bob || tr[0].TakerSide != market.Buy {
			t.Fatalf("tape %+v", tr)
		}
		st := v.Statement(ann, 0, 0)
		last := st[len(st)-1]
		if last.Kind != trader.EntryBuy || last.Cash != -40_000 || last.Qty != 4 || last.TradeSeq != 1 {
			t.Fatalf("buyer statement %+v", last)
		}
		return nil
	})
	checkExchange(t, h.f, l)
}

// TestExchangeReplayAfterRestartAppliesNothingTwice: entries replayed after
// a restart are skipped; books are not double-applied.
func TestExchangeReplayAfterRestartAppliesNothingTwice(t *testing.T) {
	h, ids, l := exHarness(t)
	logs := h.logs(
		limitCmd(ids[0], "AAA", market.Sell, 5, 10_000),
		limitCmd(ids[1], "AAA", market.Buy, 3, 10_000),
		limitCmd(ids[2], "AAA", market.Buy, 5, 9_990),
	)
	exApply(t, h.f, logs)
	want := hashOf(t, h.f)
	path := h.f.path
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	h.f = mustOpenPath(t, path)
	before, _ := h.f.Book("AAA", 10)
	exApply(t, h.f, logs) // Raft replays the log tail
	after, _ := h.f.Book("AAA", 10)
	if hashOf(t, h.f) != want || !slices.Equal(before.Bids, after.Bids) || !slices.Equal(before.Asks, after.Asks) {
		t.Fatal("replayed entries changed the state")
	}
	checkExchange(t, h.f, l)
}

// exApply is applyLogs for exchange commands: a client-order-ID repeat is a
// replay of the stored order but, unlike an idempotency-key replay, reports
// the index of the entry that asked (the order's original index is not
// recorded).
func exApply(t testing.TB, f *FSM, logs []*raft.Log) []*Result {
	t.Helper()
	resps := f.ApplyBatch(logs)
	if len(resps) != len(logs) {
		t.Fatalf("ApplyBatch returned %d responses for %d logs", len(resps), len(logs))
	}
	out := make([]*Result, len(resps))
	for i, r := range resps {
		if r == nil {
			continue
		}
		res, ok := r.(*Result)
		if !ok {
			t.Fatalf("response %d is %T, want *Result", i, r)
		}
		if res.Index != logs[i].Index && !(res.Replay && res.Index < logs[i].Index) {
			t.Fatalf("response %d has Index %d, want %d", i, res.Index, logs[i].Index)
		}
		out[i] = res
	}
	return out
}

// exApplyPacked applies the commands of logs as one batch entry (as the
// leader's group commit makes them) at the last log's index.
func exApplyPacked(t testing.TB, f *FSM, logs []*raft.Log) []*Result {
	t.Helper()
	parts := make([][]byte, len(logs))
	for i, l := range logs {
		parts[i] = l.Data
	}
	last := logs[len(logs)-1]
	resp := f.ApplyBatch([]*raft.Log{{Index: last.Index, Term: last.Term, Type: raft.LogCommand, Data: EncodeBatch(parts)}})[0]
	br, ok := resp.(*BatchResult)
	if !ok || len(br.Results) != len(logs) {
		t.Fatalf("batch entry of %d commands answered %T %+v", len(logs), resp, resp)
	}
	return br.Results
}

func (h *harness) exApply1(c *Command) *Result {
	h.t.Helper()
	return exApply(h.t, h.f, h.logs(c))[0]
}

// TestExchangeFillAtHoldingCapDoesNotPanic: a trader whose holding is at
// trader.MaxShares (reached by a share deposit) can still have a buy order
// filled: the match is already made in the book, so settlement must book it
// rather than panic, which would stop every replica on the same entry.
func TestExchangeFillAtHoldingCapDoesNotPanic(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	top := sharesCmd(TypeDepositShares, ann, "AAA", trader.MaxShares-1_000)
	r := h.exApply1(top)
	wantCode(t, r, CodeOK)
	l.note(top, r)
	wantCode(t, h.exApply1(limitCmd(bob, "AAA", market.Sell, 5, 10_000)), CodeOK)
	r = h.exApply1(limitCmd(ann, "AAA", market.Buy, 5, 10_000))
	wantCode(t, r, CodeOK)
	if r.Order.Status != market.Filled {
		t.Fatalf("buy at the cap: %+v", r.Order)
	}
	checkExchange(t, h.f, l)
}

// TestExchangeClientIDRepeatsWhateverTheirOrder: placing skips the
// client-ID lookup for an ID the account's window answers for (cidWindow);
// IDs that arrive out of order, repeats inside one batch entry, another
// account's larger IDs, and repeats after the window is dropped by a
// reopen must all still be caught.
func TestExchangeClientIDRepeatsWhateverTheirOrder(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	place := func(acct uint64, cid string) *Command {
		c := limitCmd(acct, "AAA", market.Buy, 1, 9_000)
		c.ClientID = cid
		return c
	}
	first := map[string]uint64{}
	want := func(r *Result, acct uint64, cid string, replay bool) {
		t.Helper()
		key := fmt.Sprint(acct, "/", cid)
		switch {
		case r.Code != CodeOK || r.Order == nil:
			t.Fatalf("%s: %+v", key, r)
		case replay && (!r.Replay || r.Order.ID != first[key]):
			t.Fatalf("%s: want a replay of order %d, got %+v (order %d)", key, first[key], r, r.Order.ID)
		case !replay && r.Replay:
			t.Fatalf("%s: a new client ID replayed order %d", key, r.Order.ID)
		case !replay:
			first[key] = r.Order.ID
		}
	}
	// Descending, then ascending around them, then repeats of each.
	for _, cid := range []string{"m", "c", "z", "a", "mm"} {
		want(h.exApply1(place(ann, cid)), ann, cid, false)
	}
	for _, cid := range []string{"a", "c", "m", "mm", "z"} {
		want(h.exApply1(place(ann, cid)), ann, cid, true)
	}
	// Another account's larger IDs do not hide ann's, nor ann's bob's.
	want(h.exApply1(place(bob, "zz")), bob, "zz", false)
	want(h.exApply1(place(bob, "m")), bob, "m", false)
	want(h.exApply1(place(ann, "zz")), ann, "zz", false)
	want(h.exApply1(place(ann, "m")), ann, "m", true)
	// A new ID and its repeat in one batch entry.
	rs := exApplyPacked(t, h.f, h.logs(place(ann, "zzz"), place(ann, "zzz"), place(ann, "b"), place(ann, "b")))
	want(rs[0], ann, "zzz", false)
	want(rs[1], ann, "zzz", true)
	want(rs[2], ann, "b", false)
	want(rs[3], ann, "b", true)
	// After a reopen the cache is gone; repeats still replay, new IDs do not.
	path := h.f.path
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	h.f = mustOpenPath(t, path)
	want(h.exApply1(place(ann, "zzz")), ann, "zzz", true)
	want(h.exApply1(place(ann, "a")), ann, "a", true)
	want(h.exApply1(place(ann, "zzzz")), ann, "zzzz", false)
	want(h.exApply1(place(bob, "zz")), bob, "zz", true)
	checkExchange(t, h.f, l)
}

// TestExchangeClientIDCacheDroppedOnRestore: a restore replaces the state
// whole, so the largest client IDs cached from the state before it must
// go with it: restoring a state where an account used a larger client ID
// than the one cached, that ID must replay, not place a second order.
func TestExchangeClientIDCacheDroppedOnRestore(t *testing.T) {
	src, ids, _ := exHarness(t)
	ann := ids[0]
	place := func(h *harness, cid string) *Result {
		c := limitCmd(ann, "AAA", market.Buy, 1, 9_000)
		c.ClientID = cid
		return h.exApply1(c)
	}
	wantCode(t, place(src, "a"), CodeOK)
	z := place(src, "z")
	wantCode(t, z, CodeOK)
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}

	dst, _, _ := exHarness(t) // the same accounts; ann's largest client ID here is "a"
	wantCode(t, place(dst, "a"), CodeOK)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	dst.next = src.next
	if r := place(dst, "z"); !r.Replay || r.Order.ID != z.Order.ID {
		t.Fatalf("repeat of a client ID the restored state holds: %+v (order %d), want a replay of order %d", r, r.Order.ID, z.Order.ID)
	}
	if hashOf(t, dst.f) != hashOf(t, src.f) {
		t.Fatal("the repeat changed the restored state")
	}
}

// TestCIDWindowAgreesWithTheStoredSet: whenever the client-ID window
// answers, its answer is what the stored set says, through many times its
// bound of keys arriving slightly out of order; and it answers for most
// of them (the newest IDs), which is what spares the lookups.
func TestCIDWindowAgreesWithTheStoredSet(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	key := func(n int) []byte { return acctKey(42, fmt.Appendf(nil, "c-%08d", n)) }
	stored := map[string]bool{}
	w := &cidWindow{floor: key(100)} // as loaded: 100 is the largest stored
	for n := 0; n <= 100; n += 3 {
		stored[string(key(n))] = true
	}
	stored[string(key(100))] = true
	answered := 0
	const total = 20 * maxCIDWindow
	for i := 0; i < total; i++ {
		n := 101 + i + r.Intn(12) - 6 // jittered arrival
		if r.Intn(10) == 0 {
			n = r.Intn(101 + i) // an old ID: repeat or a gap
		}
		k := key(n)
		ok, in := w.known(k)
		if ok {
			answered++
			if in != stored[string(k)] {
				t.Fatalf("step %d: window says stored=%v for %s, the stored set says %v", i, in, k[8:], stored[string(k)])
			}
		}
		if !stored[string(k)] {
			stored[string(k)] = true
			w.add(k)
		}
		if len(w.keys) > maxCIDWindow {
			t.Fatalf("window holds %d keys, bound %d", len(w.keys), maxCIDWindow)
		}
	}
	if answered < total/2 {
		t.Fatalf("window answered %d of %d: it should answer for the newest IDs", answered, total)
	}
}

// TestExchangeClientIDRepeatsBeyondTheWindow: an account places many
// times the window's bound of client IDs, out of order, and repeats IDs
// from anywhere in its history: every repeat replays its first order and
// no new ID replays.
func TestExchangeClientIDRepeatsBeyondTheWindow(t *testing.T) {
	h, ids, l := exHarness(t)
	ann := ids[0]
	r := rand.New(rand.NewSource(11))
	first := map[string]uint64{}
	var used []string
	for i := 0; i < 5*maxCIDWindow; i++ {
		cid := fmt.Sprintf("c-%06d", i+r.Intn(8))
		if r.Intn(4) == 0 && len(used) > 0 {
			cid = used[r.Intn(len(used))]
		}
		c := limitCmd(ann, "AAA", market.Buy, 1, 9_000)
		c.ClientID = cid
		res := h.exApply1(c)
		if res.Code != CodeOK || res.Order == nil {
			t.Fatalf("%s: %+v", cid, res)
		}
		id, seen := first[cid]
		switch {
		case seen && (!res.Replay || res.Order.ID != id):
			t.Fatalf("step %d: repeat of %s placed order %d (replay %v), want a replay of %d", i, cid, res.Order.ID, res.Replay, id)
		case !seen && res.Replay:
			t.Fatalf("step %d: new client ID %s replayed order %d", i, cid, res.Order.ID)
		case !seen:
			first[cid] = res.Order.ID
			used = append(used, cid)
		}
	}
	checkExchange(t, h.f, l)
}
