package cluster_test

// Checkers of the chaos suite, and tests that each of them catches the bug
// it is there for (TestChaos_Checker_*).
//
//   - linearizability (porcupine) of each bank account's history of
//     deposits, withdrawals and linearizable balance reads; an operation
//     of unknown outcome returns at +∞, so it may or may not have happened;
//   - conservation on every node: total cash and shares equal what the
//     statements say was deposited minus withdrawn, every balance equals
//     its statement, nothing negative, reservations equal what open orders
//     hold, no book crossed;
//   - presence: acknowledged ⊆ present ⊆ attempted for deposits and
//     withdrawals (by their unique amounts in the statement) and orders (by
//     client order ID), definite failures absent, nothing applied twice;
//   - state hash: no two nodes ever had different hashes at one applied
//     index (samples taken during the run), and all agree after the heal;
//   - Raft log matching, post-mortem on every node's log store: two
//     entries with the same index and term are identical, and so is every
//     entry before them;
//   - liveness: after the heal, an agreed leader, an acknowledged write and
//     an acknowledged order within a bound.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

const chaosPorcupineTimeout = 60 * time.Second

// ---- captured state ----

// chaosOrder is an order as the checkers see it.
type chaosOrder struct {
	ID        uint64
	ClientID  string
	Account   uint64
	Symbol    string
	Buy       bool
	OnBook    bool // a resting limit (or triggered stop-limit) order
	Active    bool
	Rejected  bool
	Limit     int64
	Remaining int64
	Reserve   int64 // per-share cash a buy holds back
}

type chaosPos struct{ Qty, Reserved int64 }

type chaosAcct struct {
	ID             uint64
	Cash, Reserved int64
	Positions      map[string]chaosPos
	Entries        []trader.Entry
	Orders         []chaosOrder
}

// chaosState is one node's state as the checkers need it.
type chaosState struct {
	Node          string
	Index         uint64
	Hash          string
	Accounts      map[uint64]*chaosAcct
	TotalCash     int64
	TotalReserved int64
	TotalShares   map[string]int64
	Crossed       map[string]bool // in-memory book flags
}

func toChaosOrder(o *market.Order) chaosOrder {
	return chaosOrder{
		ID: o.ID, ClientID: o.ClientID, Account: o.Account, Symbol: o.Symbol, Buy: o.Side == market.Buy,
		OnBook:   o.Status.Active() && (o.Type == market.Limit || (o.Type == market.StopLimit && o.Triggered)),
		Active:   o.Status.Active(),
		Rejected: o.Status == market.Rejected,
		Limit:    o.Limit, Remaining: o.Remaining(), Reserve: o.ReservePrice(),
	}
}

// fillChaosState reads accounts (IDs are dense from 1; a run of misses
// ends the scan), statements, positions, orders and totals.
func fillChaosState(st *chaosState, v *fsm.View) {
	misses := 0
	for id := uint64(1); misses < 20 && id < 1_000_000; id++ {
		a, ok := v.Account(id)
		if !ok {
			misses++
			continue
		}
		misses = 0
		ca := &chaosAcct{ID: id, Cash: int64(a.Cash), Reserved: int64(a.Reserved), Positions: map[string]chaosPos{}}
		for _, e := range v.Statement(id, 0, 0) {
			ca.Entries = append(ca.Entries, *e)
		}
		for _, p := range v.Positions(id) {
			ca.Positions[p.Symbol] = chaosPos{Qty: p.Qty, Reserved: p.Reserved}
		}
		for _, o := range v.Orders(id, false, "", 0) {
			ca.Orders = append(ca.Orders, toChaosOrder(o))
		}
		st.Accounts[id] = ca
	}
	st.TotalCash, st.TotalReserved, st.TotalShares = v.Totals()
}

// ---- conservation ----

// chaosCheckConservation checks one node's state on its own.
func chaosCheckConservation(st *chaosState) []string {
	var out []string
	bad := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	var sumCash, sumReserved, netCash int64
	netShares := map[string]int64{}
	sumShares := map[string]int64{}
	bestBid, bestAsk := map[string]int64{}, map[string]int64{}
	ids := make([]uint64, 0, len(st.Accounts))
	for id := range st.Accounts {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		a := st.Accounts[id]
		sumCash += a.Cash
		sumReserved += a.Reserved
		if a.Cash < 0 || a.Reserved < 0 || a.Cash-a.Reserved < 0 {
			bad("account %d: cash %d reserved %d available %d", id, a.Cash, a.Reserved, a.Cash-a.Reserved)
		}
		var stmtCash int64
		stmtQty := map[string]int64{}
		for i, e := range a.Entries {
			stmtCash += e.Cash
			if e.Symbol != "" {
				stmtQty[e.Symbol] += e.Qty
			}
			switch e.Kind {
			case trader.EntryDeposit, trader.EntryWithdrawal:
				netCash += e.Cash
			case trader.EntryShareDeposit, trader.EntryShareWithdrawal:
				netShares[e.Symbol] += e.Qty
			}
			if e.CashAfter != stmtCash {
				bad("account %d: statement line %d says cash after %d, lines sum to %d", id, e.Seq, e.CashAfter, stmtCash)
			}
			if i > 0 && e.Seq != a.Entries[i-1].Seq+1 {
				bad("account %d: statement sequence jumps from %d to %d", id, a.Entries[i-1].Seq, e.Seq)
			}
		}
		if stmtCash != a.Cash {
			bad("account %d: cash %d, statement sums to %d", id, a.Cash, stmtCash)
		}
		wantReserved := int64(0)
		wantShareRes := map[string]int64{}
		for _, o := range a.Orders {
			if !o.Active {
				continue
			}
			if o.Buy {
				wantReserved += o.Remaining * o.Reserve
			} else {
				wantShareRes[o.Symbol] += o.Remaining
			}
			if o.OnBook {
				if o.Buy && (bestBid[o.Symbol] == 0 || o.Limit > bestBid[o.Symbol]) {
					bestBid[o.Symbol] = o.Limit
				}
				if !o.Buy && (bestAsk[o.Symbol] == 0 || o.Limit < bestAsk[o.Symbol]) {
					bestAsk[o.Symbol] = o.Limit
				}
			}
		}
		if wantReserved != a.Reserved {
			bad("account %d: %d cash reserved, open buy orders hold %d", id, a.Reserved, wantReserved)
		}
		syms := map[string]bool{}
		for s := range a.Positions {
			syms[s] = true
		}
		for s := range wantShareRes {
			syms[s] = true
		}
		for s := range syms {
			p := a.Positions[s]
			sumShares[s] += p.Qty
			if p.Qty < 0 || p.Reserved < 0 || p.Qty-p.Reserved < 0 {
				bad("account %d %s: qty %d reserved %d", id, s, p.Qty, p.Reserved)
			}
			if p.Reserved != wantShareRes[s] {
				bad("account %d %s: %d shares reserved, open sell orders hold %d", id, s, p.Reserved, wantShareRes[s])
			}
			if p.Qty != stmtQty[s] {
				bad("account %d %s: holds %d, statement sums to %d", id, s, p.Qty, stmtQty[s])
			}
		}
	}
	if sumCash != st.TotalCash || sumReserved != st.TotalReserved {
		bad("totals: cash %d reserved %d, accounts sum to %d and %d", st.TotalCash, st.TotalReserved, sumCash, sumReserved)
	}
	if st.TotalCash != netCash {
		bad("total cash %d, deposited minus withdrawn %d", st.TotalCash, netCash)
	}
	syms := map[string]bool{}
	for s := range st.TotalShares {
		syms[s] = true
	}
	for s := range netShares {
		syms[s] = true
	}
	for s := range syms {
		if st.TotalShares[s] != netShares[s] || sumShares[s] != st.TotalShares[s] {
			bad("%s: %d shares held (accounts sum %d), deposited minus withdrawn %d", s, st.TotalShares[s], sumShares[s], netShares[s])
		}
	}
	for s, bid := range bestBid {
		if ask := bestAsk[s]; ask != 0 && bid >= ask {
			bad("%s book crossed: best resting bid %d ≥ best resting ask %d", s, bid, ask)
		}
	}
	for s, crossed := range st.Crossed {
		if crossed {
			bad("%s book reports itself crossed", s)
		}
	}
	sort.Strings(out)
	return out
}

// ---- presence: acknowledged ⊆ present ⊆ attempted ----

// chaosCheckPresence compares the history with one node's final state.
func chaosCheckPresence(ops []chaosOp, st *chaosState, bankAccts, marketAccts []uint64) []string {
	var out []string
	bad := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
	type amtKey struct {
		acct   uint64
		kind   string
		amount int64
	}
	attempted := map[amtKey][]chaosOp{}
	orders := map[string][]chaosOp{} // by client ID
	for _, op := range ops {
		switch op.Kind {
		case opDeposit, opWithdraw:
			k := amtKey{op.Account, op.Kind, op.Amount}
			attempted[k] = append(attempted[k], op)
		case opOrder:
			orders[op.Key] = append(orders[op.Key], op)
		}
	}
	for k, list := range attempted {
		if len(list) > 1 {
			bad("workload bug: amount %d used by %d %s operations on account %d", k.amount, len(list), k.kind, k.acct)
		}
	}
	for _, acct := range bankAccts {
		a := st.Accounts[acct]
		if a == nil {
			bad("bank account %d missing", acct)
			continue
		}
		present := map[amtKey]int{}
		for _, e := range a.Entries {
			switch e.Kind {
			case trader.EntryDeposit:
				present[amtKey{acct, opDeposit, e.Cash}]++
			case trader.EntryWithdrawal:
				present[amtKey{acct, opWithdraw, -e.Cash}]++
			}
		}
		for k, n := range present {
			list := attempted[k]
			switch {
			case len(list) == 0:
				bad("account %d: %s of %s present but never attempted", acct, k.kind, trader.Cents(k.amount))
			case n > 1:
				bad("account %d: %s of %s (key %s) applied %d times", acct, k.kind, trader.Cents(k.amount), list[0].Key, n)
			}
		}
		for k, list := range attempted {
			if k.acct != acct {
				continue
			}
			op := list[0]
			n := present[k]
			switch {
			case op.Outcome == chaosOK && !op.Rejected && n == 0:
				bad("account %d: acknowledged %s of %s (key %s, returned at %.3fs) missing", acct, k.kind, trader.Cents(k.amount), op.Key, float64(op.Return)/1e9)
			case op.Outcome == chaosOK && op.Rejected && n != 0:
				bad("account %d: %s of %s (key %s) was refused, yet applied", acct, k.kind, trader.Cents(k.amount), op.Key)
			case op.Outcome == chaosFailed && n != 0:
				bad("account %d: %s of %s (key %s) failed definitely (%s), yet applied", acct, k.kind, trader.Cents(k.amount), op.Key, op.Err)
			}
		}
	}
	for _, acct := range marketAccts {
		a := st.Accounts[acct]
		if a == nil {
			bad("market account %d missing", acct)
			continue
		}
		byCID := map[string][]chaosOrder{}
		for _, o := range a.Orders {
			byCID[o.ClientID] = append(byCID[o.ClientID], o)
		}
		for cid, list := range byCID {
			att := orders[cid]
			switch {
			case len(att) == 0:
				bad("account %d: order %d with client ID %q present but never attempted", acct, list[0].ID, cid)
			case len(list) > 1:
				bad("account %d: client order ID %q applied %d times (orders %d and %d)", acct, cid, len(list), list[0].ID, list[1].ID)
			case att[0].Account != acct:
				bad("order %q of account %d found on account %d", cid, att[0].Account, acct)
			}
		}
		for cid, att := range orders {
			op := att[0]
			if op.Account != acct {
				continue
			}
			list := byCID[cid]
			switch {
			case op.Outcome == chaosOK && len(list) == 0:
				bad("account %d: acknowledged order %q (id %d, returned at %.3fs) missing", acct, cid, op.OrderID, float64(op.Return)/1e9)
			case op.Outcome == chaosOK && op.OrderID != 0 && len(list) > 0 && list[0].ID != op.OrderID:
				bad("account %d: order %q acknowledged as %d, stored as %d", acct, cid, op.OrderID, list[0].ID)
			case op.Outcome == chaosOK && op.Rejected && len(list) > 0 && !list[0].Rejected:
				bad("account %d: order %q acknowledged as rejected, stored as not rejected", acct, cid)
			case op.Outcome == chaosFailed && len(list) > 0:
				bad("account %d: order %q failed definitely (%s), yet stored as %d", acct, cid, op.Err, list[0].ID)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ---- state hashes ----

// chaosHashSample is one node's state hash at one applied index.
type chaosHashSample struct {
	Node  string
	Index uint64
	Hash  string
}

// chaosCheckHashes reports two nodes with different hashes at one index.
func chaosCheckHashes(samples []chaosHashSample) []string {
	first := map[uint64]chaosHashSample{}
	var out []string
	for _, s := range samples {
		f, ok := first[s.Index]
		if !ok {
			first[s.Index] = s
			continue
		}
		if f.Hash != s.Hash {
			out = append(out, fmt.Sprintf("at applied index %d %s has state %s, %s has %s", s.Index, f.Node, f.Hash, s.Node, s.Hash))
			if len(out) >= 5 {
				break
			}
		}
	}
	return out
}

// chaosCheckFinal reports nodes that did not end at one index and hash.
func chaosCheckFinal(final []chaosHashSample) []string {
	var out []string
	for _, s := range final[1:] {
		if s.Index != final[0].Index || s.Hash != final[0].Hash {
			out = append(out, fmt.Sprintf("after heal %s is at %d/%s, %s at %d/%s", s.Node, s.Index, s.Hash, final[0].Node, final[0].Index, final[0].Hash))
		}
	}
	return out
}

// ---- Raft log matching ----

type chaosLogEntry struct {
	Term uint64
	Type raft.LogType
	Data []byte
}

// chaosNodeLog is a node's log store: Entries[i] is index First+i.
type chaosNodeLog struct {
	Node    string
	First   uint64
	Entries []chaosLogEntry
}

func (l chaosNodeLog) last() uint64 {
	if len(l.Entries) == 0 {
		return 0
	}
	return l.First + uint64(len(l.Entries)) - 1
}

func (l chaosNodeLog) at(i uint64) chaosLogEntry { return l.Entries[i-l.First] }

// chaosCheckLogs checks Raft's Log Matching property on every pair of
// logs: where two logs hold an entry of the same index and term, the
// entries are identical, and so are all entries before it.
func chaosCheckLogs(logs []chaosNodeLog) []string {
	var out []string
	for i := range logs {
		for j := i + 1; j < len(logs); j++ {
			a, b := logs[i], logs[j]
			if len(a.Entries) == 0 || len(b.Entries) == 0 {
				continue
			}
			lo, hi := max(a.First, b.First), min(a.last(), b.last())
			matched := uint64(0)
			bad := 0
			for k := hi; k >= lo && k > 0 && bad < 3; k-- {
				ea, eb := a.at(k), b.at(k)
				same := ea.Type == eb.Type && bytes.Equal(ea.Data, eb.Data)
				switch {
				case ea.Term == eb.Term && !same:
					out = append(out, fmt.Sprintf("%s and %s hold different entries at index %d, both of term %d (log matching violated)", a.Node, b.Node, k, ea.Term))
					bad++
				case ea.Term != eb.Term && matched != 0:
					out = append(out, fmt.Sprintf("%s and %s agree at index %d but differ at %d (terms %d and %d)", a.Node, b.Node, matched, k, ea.Term, eb.Term))
					bad++
				}
				if ea.Term == eb.Term && matched == 0 {
					matched = k
				}
			}
		}
	}
	return out
}

// ---- liveness ----

// chaosLiveness retries probe (each attempt bounded) until it succeeds or
// bound passes.
func chaosLiveness(bound time.Duration, probe func(context.Context) error) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(bound)
	var last error
	for attempt := 0; attempt < 10_000 && time.Now().Before(deadline); attempt++ {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := probe(ctx)
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		last = err
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	return time.Since(start), fmt.Errorf("no leader, acknowledged write and order within %v after heal: %v", bound, last)
}

// ---- linearizability ----

type bankInput struct {
	Kind   string
	Amount int64
}

type bankOutput struct {
	Unknown  bool
	Rejected bool
	HasCash  bool
	Cash     int64
}

// chaosBankModel is one account's balance: deposits add, withdrawals
// subtract unless the balance is short (then they are refused), reads
// return it.
var chaosBankModel = porcupine.Model{
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		s := state.(int64)
		in, out := input.(bankInput), output.(bankOutput)
		switch in.Kind {
		case opDeposit:
			if out.HasCash && out.Cash != s+in.Amount {
				return false, s
			}
			return true, s + in.Amount
		case opWithdraw:
			if out.Unknown {
				if s >= in.Amount {
					return true, s - in.Amount
				}
				return true, s
			}
			if out.Rejected {
				return s < in.Amount, s
			}
			if s < in.Amount || (out.HasCash && out.Cash != s-in.Amount) {
				return false, s
			}
			return true, s - in.Amount
		case opRead:
			return out.Cash == s, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(bankInput), output.(bankOutput)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s(%s) → unknown", in.Kind, trader.Cents(in.Amount))
		case out.Rejected:
			return fmt.Sprintf("%s(%s) → refused", in.Kind, trader.Cents(in.Amount))
		case in.Kind == opRead:
			return fmt.Sprintf("read → %s", trader.Cents(out.Cash))
		}
		return fmt.Sprintf("%s(%s) → %s", in.Kind, trader.Cents(in.Amount), trader.Cents(out.Cash))
	},
	DescribeState: func(state any) string { return trader.Cents(state.(int64)).String() },
}

// chaosBankOps turns one account's recorded operations into porcupine's:
// definite failures are left out (they did not happen), unknown writes
// return at +∞.
func chaosBankOps(ops []chaosOp, acct uint64) []porcupine.Operation {
	var out []porcupine.Operation
	for _, op := range ops {
		if op.Account != acct || op.Outcome == chaosFailed {
			continue
		}
		var in bankInput
		var res bankOutput
		switch op.Kind {
		case opDeposit, opWithdraw:
			in = bankInput{Kind: op.Kind, Amount: op.Amount}
		case opRead:
			in = bankInput{Kind: opRead}
		default:
			continue
		}
		ret := op.Return
		if op.Outcome == chaosUnknown {
			res.Unknown, ret = true, math.MaxInt64
		} else {
			res.Rejected, res.HasCash, res.Cash = op.Rejected, op.HasCash, op.Cash
		}
		out = append(out, porcupine.Operation{ClientId: op.Client, Input: in, Call: op.Call, Output: res, Return: ret})
	}
	return out
}

// chaosCheckLinearizable checks every bank account's history. A failed
// check writes porcupine's visualization next to the test's temp files.
func chaosCheckLinearizable(ops []chaosOp, accts []uint64, name string, seed uint64) (anomalies []string, info string) {
	total := 0
	for _, acct := range accts {
		hist := chaosBankOps(ops, acct)
		total += len(hist)
		res, li := porcupine.CheckOperationsVerbose(chaosBankModel, hist, chaosPorcupineTimeout)
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			anomalies = append(anomalies, fmt.Sprintf("account %d: check inconclusive after %v (%d operations)", acct, chaosPorcupineTimeout, len(hist)))
		default:
			msg := fmt.Sprintf("account %d: history of %d operations is not linearizable", acct, len(hist))
			p := filepath.Join(os.TempDir(), fmt.Sprintf("hats-chaos-%s-%d-acct%d.html", sanitize(name), seed, acct))
			if err := porcupine.VisualizePath(chaosBankModel, li, p); err == nil {
				msg += " (visualization: " + p + ")"
			}
			anomalies = append(anomalies, msg)
		}
	}
	return anomalies, fmt.Sprintf("porcupine over %d bank operations on %d accounts", total, len(accts))
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// =====================================================================
// The checkers must be able to fail: each is fed a deliberately broken
// history or state and must report it.
// =====================================================================

func okOp(kind string, client int, call, ret int64, amount, cash int64) chaosOp {
	return chaosOp{Kind: kind, Client: client, Account: 1, Call: call, Return: ret, Amount: amount, Cash: cash, HasCash: true, Outcome: chaosOK}
}

func TestChaos_Checker_Linearizability(t *testing.T) {
	cases := []struct {
		name string
		ops  []chaosOp
		ok   bool
	}{
		{"sequential deposit then read", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opRead, 1, 20, 30, 0, 500)}, true},
		{"stale read after an acknowledged deposit", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opRead, 1, 20, 30, 0, 0)}, false},
		{"concurrent read may miss the deposit", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opRead, 1, 5, 30, 0, 0)}, true},
		{"lost acknowledged deposit", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opDeposit, 0, 20, 30, 300, 800), okOp(opRead, 1, 40, 50, 0, 300)}, false},
		{"deposit applied twice", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opRead, 1, 20, 30, 0, 1000)}, false},
		{"unknown deposit may have happened", []chaosOp{{Kind: opDeposit, Account: 1, Call: 0, Amount: 500, Outcome: chaosUnknown}, okOp(opRead, 1, 20, 30, 0, 500)}, true},
		{"unknown deposit may not have happened", []chaosOp{{Kind: opDeposit, Account: 1, Call: 0, Amount: 500, Outcome: chaosUnknown}, okOp(opRead, 1, 20, 30, 0, 0)}, true},
		{"but not both", []chaosOp{{Kind: opDeposit, Account: 1, Call: 0, Amount: 500, Outcome: chaosUnknown}, okOp(opRead, 1, 20, 30, 0, 500), okOp(opRead, 1, 40, 50, 0, 0)}, false},
		{"refused withdrawal with enough cash", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), {Kind: opWithdraw, Account: 1, Call: 20, Return: 30, Amount: 100, Outcome: chaosOK, Rejected: true}}, false},
		{"overdraft", []chaosOp{okOp(opDeposit, 0, 0, 10, 500, 500), okOp(opWithdraw, 0, 20, 30, 600, -100)}, false},
		{"failed deposit left out", []chaosOp{{Kind: opDeposit, Account: 1, Call: 0, Return: 10, Amount: 500, Outcome: chaosFailed}, okOp(opRead, 1, 20, 30, 0, 0)}, true},
	}
	for _, tc := range cases {
		for i := range tc.ops {
			if tc.ops[i].Outcome == chaosUnknown {
				tc.ops[i].Return = math.MaxInt64
			}
		}
		anomalies, _ := chaosCheckLinearizable(tc.ops, []uint64{1}, "selftest", 0)
		if got := len(anomalies) == 0; got != tc.ok {
			t.Errorf("%s: linearizable=%v, want %v (%v)", tc.name, got, tc.ok, anomalies)
		}
	}
}

// goodChaosState is a small conserving state: two accounts, one open buy
// and one open sell that do not cross.
func goodChaosState() *chaosState {
	a := &chaosAcct{ID: 1, Cash: 100_000, Reserved: 2 * 18900, Positions: map[string]chaosPos{},
		Entries: []trader.Entry{{Seq: 1, Kind: trader.EntryDeposit, Cash: 100_000, CashAfter: 100_000}},
		Orders:  []chaosOrder{{ID: 1, ClientID: "c1", Account: 1, Symbol: "AAPL", Buy: true, OnBook: true, Active: true, Limit: 18900, Remaining: 2, Reserve: 18900}},
	}
	b := &chaosAcct{ID: 2, Cash: 0, Positions: map[string]chaosPos{"AAPL": {Qty: 10, Reserved: 3}},
		Entries: []trader.Entry{{Seq: 1, Kind: trader.EntryShareDeposit, Symbol: "AAPL", Qty: 10}},
		Orders:  []chaosOrder{{ID: 2, ClientID: "c2", Account: 2, Symbol: "AAPL", OnBook: true, Active: true, Limit: 19000, Remaining: 3}},
	}
	return &chaosState{Node: "n1", Accounts: map[uint64]*chaosAcct{1: a, 2: b}, TotalCash: 100_000, TotalReserved: 2 * 18900,
		TotalShares: map[string]int64{"AAPL": 10}, Crossed: map[string]bool{"AAPL": false}}
}

func TestChaos_Checker_Conservation(t *testing.T) {
	if a := chaosCheckConservation(goodChaosState()); len(a) != 0 {
		t.Fatalf("good state reported: %v", a)
	}
	breaks := map[string]func(*chaosState){
		"money from nowhere":  func(s *chaosState) { s.Accounts[1].Cash += 100; s.TotalCash += 100 },
		"total not conserved": func(s *chaosState) { s.TotalCash -= 1 },
		"negative cash": func(s *chaosState) {
			s.Accounts[2].Cash, s.Accounts[2].Entries = -5, append(s.Accounts[2].Entries, trader.Entry{Seq: 2, Kind: trader.EntryWithdrawal, Cash: -5, CashAfter: -5})
			s.TotalCash -= 5
		},
		"shares from nowhere": func(s *chaosState) {
			s.Accounts[2].Positions["AAPL"] = chaosPos{Qty: 11, Reserved: 3}
			s.TotalShares["AAPL"] = 11
		},
		"reservation leak":     func(s *chaosState) { s.Accounts[1].Orders[0].Active, s.Accounts[1].Orders[0].OnBook = false, false },
		"crossed resting book": func(s *chaosState) { s.Accounts[2].Orders[0].Limit = 18800 },
		"book flags crossed":   func(s *chaosState) { s.Crossed["AAPL"] = true },
		"statement gap": func(s *chaosState) {
			s.Accounts[1].Entries = append(s.Accounts[1].Entries, trader.Entry{Seq: 3, Kind: trader.EntryDeposit, Cash: 1, CashAfter: 100_001})
			s.Accounts[1].Cash++
			s.TotalCash++
		},
	}
	for name, brk := range breaks {
		s := goodChaosState()
		brk(s)
		if a := chaosCheckConservation(s); len(a) == 0 {
			t.Errorf("%s: not reported", name)
		} else {
			t.Logf("%s: %v", name, a)
		}
	}
}

func TestChaos_Checker_Presence(t *testing.T) {
	dep := func(amount int64, outcome string) chaosOp {
		return chaosOp{Kind: opDeposit, Account: 1, Amount: amount, Key: fmt.Sprintf("k%d", amount), Outcome: outcome}
	}
	ord := func(cid string, id uint64, outcome string) chaosOp {
		return chaosOp{Kind: opOrder, Account: 2, Key: cid, OrderID: id, Outcome: outcome}
	}
	state := func(deposits []int64, orders map[string]uint64) *chaosState {
		a := &chaosAcct{ID: 1}
		for i, d := range deposits {
			a.Entries = append(a.Entries, trader.Entry{Seq: uint64(i + 1), Kind: trader.EntryDeposit, Cash: d})
		}
		b := &chaosAcct{ID: 2}
		for cid, id := range orders {
			b.Orders = append(b.Orders, chaosOrder{ID: id, ClientID: cid, Account: 2})
		}
		return &chaosState{Accounts: map[uint64]*chaosAcct{1: a, 2: b}}
	}
	ops := []chaosOp{dep(101, chaosOK), dep(102, chaosUnknown), dep(103, chaosFailed), ord("c1", 7, chaosOK), ord("c2", 0, chaosUnknown), ord("c3", 0, chaosFailed)}
	cases := []struct {
		name string
		st   *chaosState
		ok   bool
	}{
		{"all fine, unknowns absent", state([]int64{101}, map[string]uint64{"c1": 7}), true},
		{"all fine, unknowns present", state([]int64{101, 102}, map[string]uint64{"c1": 7, "c2": 8}), true},
		{"acknowledged deposit missing", state(nil, map[string]uint64{"c1": 7}), false},
		{"deposit applied twice", state([]int64{101, 101}, map[string]uint64{"c1": 7}), false},
		{"failed deposit applied", state([]int64{101, 103}, map[string]uint64{"c1": 7}), false},
		{"deposit never attempted", state([]int64{101, 999}, map[string]uint64{"c1": 7}), false},
		{"acknowledged order missing", state([]int64{101}, nil), false},
		{"order stored under another id", state([]int64{101}, map[string]uint64{"c1": 9}), false},
		{"failed order stored", state([]int64{101}, map[string]uint64{"c1": 7, "c3": 8}), false},
		{"order never attempted", state([]int64{101}, map[string]uint64{"c1": 7, "zz": 8}), false},
	}
	for _, tc := range cases {
		a := chaosCheckPresence(ops, tc.st, []uint64{1}, []uint64{2})
		if got := len(a) == 0; got != tc.ok {
			t.Errorf("%s: clean=%v, want %v (%v)", tc.name, got, tc.ok, a)
		}
	}
	// A client order ID applied twice.
	st := state([]int64{101}, map[string]uint64{"c1": 7})
	st.Accounts[2].Orders = append(st.Accounts[2].Orders, chaosOrder{ID: 8, ClientID: "c1", Account: 2})
	if a := chaosCheckPresence(ops, st, []uint64{1}, []uint64{2}); len(a) == 0 {
		t.Error("client order ID applied twice: not reported")
	}
}

func TestChaos_Checker_Hashes(t *testing.T) {
	good := []chaosHashSample{{"n1", 5, "aa"}, {"n2", 5, "aa"}, {"n3", 6, "bb"}, {"n1", 6, "bb"}}
	if a := chaosCheckHashes(good); len(a) != 0 {
		t.Fatalf("good samples reported: %v", a)
	}
	if a := chaosCheckHashes(append(good, chaosHashSample{"n2", 6, "cc"})); len(a) == 0 {
		t.Error("diverged hash at one index not reported")
	}
	if a := chaosCheckFinal([]chaosHashSample{{"n1", 9, "aa"}, {"n2", 9, "ab"}}); len(a) == 0 {
		t.Error("diverged final hash not reported")
	}
	if a := chaosCheckFinal([]chaosHashSample{{"n1", 9, "aa"}, {"n2", 8, "aa"}}); len(a) == 0 {
		t.Error("final index mismatch not reported")
	}
}

func TestChaos_Checker_LogMatching(t *testing.T) {
	e := func(term uint64, d string) chaosLogEntry {
		return chaosLogEntry{Term: term, Type: raft.LogCommand, Data: []byte(d)}
	}
	base := chaosNodeLog{Node: "n1", First: 1, Entries: []chaosLogEntry{e(1, "a"), e(1, "b"), e(2, "c"), e(2, "d")}}
	cases := []struct {
		name  string
		other chaosNodeLog
		ok    bool
	}{
		{"identical", chaosNodeLog{Node: "n2", First: 1, Entries: []chaosLogEntry{e(1, "a"), e(1, "b"), e(2, "c"), e(2, "d")}}, true},
		{"compacted prefix", chaosNodeLog{Node: "n2", First: 3, Entries: []chaosLogEntry{e(2, "c"), e(2, "d"), e(3, "e")}}, true},
		{"uncommitted tail of an old term", chaosNodeLog{Node: "n2", First: 1, Entries: []chaosLogEntry{e(1, "a"), e(1, "b"), e(3, "x")}}, true},
		{"same index and term, other data (#695)", chaosNodeLog{Node: "n2", First: 1, Entries: []chaosLogEntry{e(1, "a"), e(1, "b"), e(2, "X"), e(2, "d")}}, false},
		{"agree late, differ early", chaosNodeLog{Node: "n2", First: 1, Entries: []chaosLogEntry{e(1, "a"), e(5, "b"), e(2, "c"), e(2, "d")}}, false},
	}
	for _, tc := range cases {
		a := chaosCheckLogs([]chaosNodeLog{base, tc.other})
		if got := len(a) == 0; got != tc.ok {
			t.Errorf("%s: clean=%v, want %v (%v)", tc.name, got, tc.ok, a)
		}
	}
}

func TestChaos_Checker_Liveness(t *testing.T) {
	if _, err := chaosLiveness(300*time.Millisecond, func(context.Context) error { return errors.New("no leader") }); err == nil {
		t.Fatal("a cluster that never recovers passed the liveness check")
	}
	n := 0
	took, err := chaosLiveness(5*time.Second, func(context.Context) error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || took <= 0 {
		t.Fatalf("recovering cluster: %v after %v", err, took)
	}
}

// TestChaos_Checker_StaleReadsFromIsolatedNode runs a deliberately broken
// read path on a real cluster: balance reads served from a node's local
// state without asking the leader (consistency=stale), while that node is
// cut off from the others. The linearizability checker must report it.
func TestChaos_Checker_StaleReadsFromIsolatedNode(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos: skipped with -short")
	}
	e := newChaosEnv(t, "checker-stale-reads", chaosOpts{Banks: 1, PerBank: 1, Markets: 1, Idle: true})
	leader := e.leader()
	victim := e.others(leader)[0]
	ctx := context.Background()
	writer := e.pinnedClient("stale-writer", leader, "bank1")
	reader := e.pinnedClient("stale-reader", victim, "bank1")
	acct := e.bankAccts[0]
	h := newChaosHistory()
	client := 0
	record := func(op chaosOp) { h.add(op) }
	read := func() {
		op := chaosOp{Client: 1, Account: acct, Kind: opRead, Call: h.now()}
		a, err := reader.Account(ctx, transport.Stale) // the broken build: no read index
		op.Return = h.now()
		if err != nil {
			op.Outcome, op.Err = chaosFailed, err.Error()
		} else {
			op.Outcome = chaosOK
			op.Cash, op.HasCash = parseCash(a.Cash)
		}
		record(op)
	}
	read()
	e.net.Isolate(victim)
	e.event("partition", "isolate %s (reads served there without a read index)", victim)
	for i := 0; i < 3; i++ {
		op := chaosOp{Client: client, Account: acct, Kind: opDeposit, Amount: int64(100 + i), Call: h.now()}
		a, err := writer.Deposit(ctx, trader.Cents(op.Amount).String(), "")
		op.Return = h.now()
		op.Outcome = classify(err)
		if err == nil {
			op.Cash, op.HasCash = parseCash(a.Cash)
		}
		record(op)
		read()
	}
	e.heal()
	anomalies, _ := chaosCheckLinearizable(h.Ops(), []uint64{acct}, "selftest-stale", e.seed)
	if len(anomalies) == 0 {
		t.Fatalf("stale reads from an isolated node passed the linearizability check: %+v", h.Ops())
	}
	t.Logf("reported as expected: %v", anomalies)
	for _, op := range h.Ops() {
		t.Logf("op %s %d cash=%d call=%.3f ret=%.3f %s", op.Kind, op.Amount, op.Cash, float64(op.Call)/1e9, float64(op.Return)/1e9, op.Err)
	}
	// The real read path on the same isolated node must not be stale: it
	// either fails or returns the latest balance.
	e.net.Isolate(victim)
	lin, err := reader.Account(ctx, transport.Linearizable)
	if err == nil {
		t.Fatalf("linearizable read on an isolated node answered: %+v", lin)
	}
	t.Logf("linearizable read on the isolated node refused: %v", err)
	e.heal()
}
