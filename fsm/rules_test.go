package fsm

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/hats-trading/hats/market"
)

// TestRulesStopLimitCollar: at RulesBase a stop-limit order's limit is
// not collared (what every release did before rules versions); from the
// TypeSetRules entry that raises the cluster to RulesStopLimitCollar on,
// a stop-limit beyond the collar around its trigger price (or, once
// triggered, around the reference) is rejected on entry and on amend.
// The version is never lowered, is part of the state (hash, snapshot),
// and a node that applies less refuses such state and stops rather than
// apply the raise.
func TestRulesStopLimitCollar(t *testing.T) {
	h, ids, _ := exHarness(t)
	ann, bob, cat := ids[0], ids[1], ids[2]
	stopLimit := func(limit int64) *Command {
		return placeCmd(ann, "AAA", market.Buy, market.StopLimit, market.GTC, 2, limit, 10_100)
	}
	rules := func() uint64 {
		t.Helper()
		var r uint64
		_ = h.f.View(func(v *View) error { r = v.Rules(); return nil })
		return r
	}
	if rules() != RulesBase {
		t.Fatalf("a new state's rules: %d, want %d", rules(), RulesBase)
	}
	// AAA's stop at 101.00 gives a collar up to 111.10.
	wide := h.exApply1(stopLimit(12_000))
	wantCode(t, wide, CodeOK)
	wantCode(t, h.exApply1(&Command{Type: TypeAmendOrder, Account: ann, OrderID: wide.Order.ID, Limit: 13_000}), CodeOK)

	wantCode(t, h.apply1(&Command{Type: TypeSetRules, Rules: RulesStopLimitCollar}), CodeOK)
	if rules() != RulesStopLimitCollar {
		t.Fatalf("rules after the raise: %d", rules())
	}
	wantCode(t, h.exApply1(stopLimit(12_000)), CodeBeyondCollar)
	near := h.exApply1(stopLimit(11_000))
	wantCode(t, near, CodeOK)
	wantCode(t, h.exApply1(&Command{Type: TypeAmendOrder, Account: ann, OrderID: near.Order.ID, Limit: 11_200}), CodeBeyondCollar)
	wantCode(t, h.exApply1(&Command{Type: TypeAmendOrder, Account: ann, OrderID: near.Order.ID, Qty: 3}), CodeOK) // the limit kept: no check
	// Limit orders keep their own collar; the order placed before the
	// raise stays as it was.
	wantCode(t, h.exApply1(limitCmd(bob, "AAA", market.Buy, 1, 12_000)), CodeBeyondCollar)
	var old *market.Order
	_ = h.f.View(func(v *View) error { old, _ = v.Order(wide.Order.ID); return nil })
	if old == nil || old.Status != market.Open || old.Limit != 13_000 {
		t.Fatalf("the stop-limit placed before the raise: %+v", old)
	}

	// Triggered: a trade at 101.00 sets off both stops; ann's near order
	// rests (nothing to buy up to 110.00), and its collar is now the
	// reference's.
	wantCode(t, h.exApply1(limitCmd(bob, "AAA", market.Sell, 1, 10_100)), CodeOK)
	wantCode(t, h.exApply1(limitCmd(cat, "AAA", market.Buy, 1, 10_100)), CodeOK)
	var trig *market.Order
	_ = h.f.View(func(v *View) error { trig, _ = v.Order(near.Order.ID); return nil })
	if trig == nil || !trig.Triggered || !trig.Status.Active() {
		t.Fatalf("the stop-limit after a trade at its trigger: %+v", trig)
	}
	wantCode(t, h.exApply1(&Command{Type: TypeAmendOrder, Account: ann, OrderID: near.Order.ID, Limit: 11_200}), CodeBeyondCollar)
	wantCode(t, h.exApply1(&Command{Type: TypeAmendOrder, Account: ann, OrderID: near.Order.ID, Limit: 10_900}), CodeOK)

	// Never lowered.
	wantCode(t, h.apply1(&Command{Type: TypeSetRules, Rules: RulesBase}), CodeOK)
	if rules() != RulesStopLimitCollar {
		t.Fatalf("rules after an attempt to lower them: %d", rules())
	}

	// The version travels with the state.
	snap := snapshotBytes(t, h.f)
	same := mustOpen(t)
	if err := same.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	want, _, _ := h.f.Hash()
	if got, _, _ := same.Hash(); got != want {
		t.Fatalf("restored hash %s, want %s", got, want)
	}
	old1 := mustOpenOpts(t, Options{MaxRules: RulesBase})
	before, _, _ := old1.Hash()
	if err := old1.Restore(io.NopCloser(bytes.NewReader(snap))); !errors.Is(err, ErrRulesTooNew) || !errors.Is(err, ErrRestore) {
		t.Fatalf("a release at rules 1 restoring a rules-2 snapshot: %v, want ErrRulesTooNew", err)
	}
	if after, _, _ := old1.Hash(); after != before {
		t.Fatal("a refused restore changed the state")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	f2 := mustOpenPath(t, path)
	if err := f2.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if err := f2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWith(path, nil, Options{MaxRules: RulesBase}); !errors.Is(err, ErrRulesTooNew) {
		t.Fatalf("a release at rules 1 opening a rules-2 state file: %v, want ErrRulesTooNew", err)
	}

	// A node that applies less than an entry raises to stops.
	lo := &harness{t: t, f: old1, next: 1, term: 1, now: t0}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a rules-1 node applied a raise to rules 2")
			}
		}()
		lo.apply1(&Command{Type: TypeSetRules, Rules: RulesStopLimitCollar})
	}()
}
