package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// exchangeCluster is a 3-node cluster without a price feed, so reference
// prices stay those of market.DefaultUniverse.
func exchangeCluster(t *testing.T) *Cluster {
	t.Helper()
	c := NewCluster(t, 3, func(cfg *node.Config) { cfg.Feed.Kind = "none" })
	cl := c.Client()
	Poll(t, 10*time.Second, "instrument table committed", func() error {
		l, err := cl.Symbols(context.Background())
		if err != nil {
			return err
		}
		if len(l.Symbols) != 10 {
			return fmt.Errorf("%d symbols", len(l.Symbols))
		}
		return nil
	})
	return c
}

// holdings is what bad input must leave alone: cash and every position.
func holdings(t *testing.T, cl *transport.Client) string {
	t.Helper()
	pf, err := cl.Portfolio(context.Background(), "")
	if err != nil {
		t.Fatalf("portfolio: %v", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cash=%s avail=%s", pf.Cash, pf.AvailableCash)
	for _, p := range pf.Positions {
		fmt.Fprintf(&b, " %s=%d/%d@%s", p.Symbol, p.Quantity, p.AvailableQuantity, p.CostBasis)
	}
	return b.String()
}

func mustRejected(t *testing.T, o *transport.Order, err error, code string) *transport.OrderRejectedError {
	t.Helper()
	var rej *transport.OrderRejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("want rejection %s, got order %+v, err %v", code, o, err)
	}
	if rej.Err.Code != code || rej.Err.Status != http.StatusUnprocessableEntity {
		t.Fatalf("rejection %d %s (%s), want 422 %s", rej.Err.Status, rej.Err.Code, rej.Err.Message, code)
	}
	if rej.Order == nil || o == nil || rej.Order.Status != transport.StatusRejected || rej.Order.OrderID == 0 || rej.Order.RemainingQuantity != 0 {
		t.Fatalf("rejected order not returned: %+v", rej.Order)
	}
	if rej.Order.Reason == "" || rej.Order.RejectCode != code {
		t.Fatalf("rejected order lacks reason/code: %+v", rej.Order)
	}
	return rej
}

func Test_Exchange_TwoTradersOnFollowers(t *testing.T) {
	c := exchangeCluster(t)
	ctx := context.Background()
	fs := c.Followers()
	alice, bob := c.Client(fs[0]), c.Client(fs[1])
	Trader(t, alice, "alice")
	Trader(t, bob, "bob")

	if _, err := alice.Deposit(ctx, "10000.00", ""); err != nil {
		t.Fatal(err)
	}
	pos, err := bob.DepositShares(ctx, "aapl", 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if pos.Symbol != "AAPL" || pos.Quantity != 100 || pos.AvailableQuantity != 100 || pos.AvgCost != "189.10" {
		t.Fatalf("share deposit: %+v", pos)
	}

	// Bob rests a sell; Alice takes it with a market and a limit order.
	ask, err := bob.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "sell", Quantity: 10, LimitPrice: "189.00"})
	if err != nil {
		t.Fatal(err)
	}
	if ask.Status != "open" || ask.Type != "limit" || ask.TIF != "gtc" || ask.RemainingQuantity != 10 || ask.ClientID == "" || ask.Replayed {
		t.Fatalf("resting ask: %+v", ask)
	}
	mkt, err := alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 4})
	if err != nil {
		t.Fatal(err)
	}
	if mkt.Status != "filled" || mkt.Type != "market" || mkt.TIF != "ioc" || mkt.FilledQuantity != 4 || mkt.AvgFillPrice != "189.00" || mkt.LimitPrice != "" {
		t.Fatalf("market buy: %+v", mkt)
	}
	lim, err := alice.PlaceOrder(ctx, transport.OrderRequest{ClientID: "alice-lim-1", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 6, LimitPrice: "189"})
	if err != nil {
		t.Fatal(err)
	}
	if lim.Status != "filled" || lim.FilledQuantity != 6 || lim.AvgFillPrice != "189.00" || lim.LimitPrice != "189.00" || lim.ClientID != "alice-lim-1" {
		t.Fatalf("limit buy: %+v", lim)
	}
	if o, err := bob.Order(ctx, ask.OrderID); err != nil || o.Status != "filled" || o.FilledQuantity != 10 || o.RemainingQuantity != 0 {
		t.Fatalf("bob's ask after the fills: %+v, %v", o, err)
	}

	// A repeat of a client ID returns the first order, not a second one.
	again, err := alice.PlaceOrder(ctx, transport.OrderRequest{ClientID: "alice-lim-1", Symbol: "AAPL", Side: "buy", Quantity: 6, LimitPrice: "189.00"})
	if err != nil || !again.Replayed || again.OrderID != lim.OrderID || again.Status != "filled" || again.FilledQuantity != 6 {
		t.Fatalf("repeat: %+v, %v", again, err)
	}
	raw := send(t, fs[0].HTTPAddr, rawReq{method: "POST", path: "/v1/orders", token: alice.Token(),
		body: jsonBody(map[string]any{"client_id": "alice-lim-1", "symbol": "AAPL", "side": "buy", "type": "limit", "quantity": 6, "limit_price": "189.00"})})
	var rawOrder transport.Order
	if raw.status != http.StatusOK || json.Unmarshal(raw.body, &rawOrder) != nil || !rawOrder.Replayed || rawOrder.OrderID != lim.OrderID {
		t.Fatalf("raw repeat: %s", raw)
	}
	if byCID, err := alice.OrderByClientID(ctx, "alice-lim-1"); err != nil || byCID.OrderID != lim.OrderID {
		t.Fatalf("order by client id: %+v, %v", byCID, err)
	}

	// Portfolios.
	pa, err := alice.Portfolio(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if pa.Cash != "8110.00" || pa.AvailableCash != "8110.00" || len(pa.Positions) != 1 || pa.Equity != "10000.00" || pa.RealizedPnL != "0.00" {
		t.Fatalf("alice portfolio: %+v", pa)
	}
	if p := pa.Positions[0]; p.Symbol != "AAPL" || p.Quantity != 10 || p.AvailableQuantity != 10 || p.AvgCost != "189.00" ||
		p.LastPrice != "189.00" || p.MarketValue != "1890.00" || p.UnrealizedPnL != "0.00" {
		t.Fatalf("alice position: %+v", p)
	}
	pb, err := bob.Portfolio(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// Bob's basis is the reference price of his deposit: 189.10 a share.
	// Selling 10 at 189.00 realizes -1.00; 90 left at 189.10, marked at
	// 189.00, are -9.00 unrealized.
	if pb.Cash != "1890.00" || len(pb.Positions) != 1 || pb.RealizedPnL != "-1.00" || pb.UnrealizedPnL != "-9.00" ||
		pb.MarketValue != "17010.00" || pb.Equity != "18900.00" {
		t.Fatalf("bob portfolio: %+v", pb)
	}
	if p := pb.Positions[0]; p.Quantity != 90 || p.AvgCost != "189.10" || p.RealizedPnL != "-1.00" || p.CostBasis != "17019.00" {
		t.Fatalf("bob position: %+v", p)
	}

	// Statements reconcile with the portfolio.
	for _, tc := range []struct {
		name  string
		cl    *transport.Client
		kinds string
	}{{"alice", alice, "deposit,buy,buy"}, {"bob", bob, "share_deposit,sell,sell"}} {
		act, err := tc.cl.Activity(ctx, transport.ActivityQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		var sum int64
		for i, en := range act.Entries {
			kinds = append(kinds, en.Kind)
			sum += cents(t, en.Amount)
			if en.Seq != uint64(i+1) {
				t.Fatalf("%s statement seq %d at %d", tc.name, en.Seq, i)
			}
			if cents(t, en.CashBalance) != sum {
				t.Fatalf("%s running balance %s after %d, want %s", tc.name, en.CashBalance, en.Seq, fmtCents(sum))
			}
		}
		if strings.Join(kinds, ",") != tc.kinds || act.More {
			t.Fatalf("%s statement kinds %v more=%v", tc.name, kinds, act.More)
		}
		if last := act.Entries[len(act.Entries)-1]; last.CashBalance != act.Cash || fmtCents(sum) != act.Cash {
			t.Fatalf("%s statement ends at %s, sums to %s; cash %s", tc.name, last.CashBalance, fmtCents(sum), act.Cash)
		}
	}

	// Fills, newest first.
	fa, err := alice.Fills(ctx, transport.FillsQuery{Symbol: "AAPL"})
	if err != nil {
		t.Fatal(err)
	}
	if len(fa.Fills) != 2 || fa.Fills[0].TradeSeq != 2 || fa.Fills[0].OrderID != lim.OrderID || fa.Fills[0].Quantity != 6 ||
		fa.Fills[0].Amount != "1134.00" || fa.Fills[1].TradeSeq != 1 || fa.Fills[1].OrderID != mkt.OrderID || fa.Fills[1].Side != "buy" {
		t.Fatalf("alice fills: %+v", fa.Fills)
	}
	fb, err := bob.Fills(ctx, transport.FillsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fb.Fills) != 2 || fb.Fills[0].Side != "sell" || fb.Fills[0].OrderID != ask.OrderID || fb.Fills[1].Price != "189.00" {
		t.Fatalf("bob fills: %+v", fb.Fills)
	}

	// Resting orders on both sides, then the tape, quote, book and candles
	// (stale reads: poll until the follower shows them).
	bid, err := alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "188.00", PostOnly: true})
	if err != nil || bid.Status != "open" {
		t.Fatalf("alice bid: %+v, %v", bid, err)
	}
	offer, err := bob.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "sell", Quantity: 5, LimitPrice: "190.00", TIF: "day"})
	if err != nil || offer.Status != "open" || offer.ExpiresAt == "" {
		t.Fatalf("bob offer: %+v, %v", offer, err)
	}
	if a, err := alice.Account(ctx, ""); err != nil || a.AvailableCash != "7922.00" {
		t.Fatalf("alice reservation: %+v, %v", a, err)
	}
	Poll(t, 5*time.Second, "market data on a follower", func() error {
		tp, err := alice.Trades(ctx, "AAPL", 0)
		if err != nil {
			return err
		}
		if len(tp.Trades) != 2 || tp.Consistency != transport.Stale || tp.AppliedIndex == 0 {
			return fmt.Errorf("tape: %+v", tp)
		}
		for i, tr := range tp.Trades {
			if tr.Seq != uint64(2-i) || tr.Price != "189.00" || tr.TakerSide != "buy" {
				return fmt.Errorf("tape trade %d: %+v", i, tr)
			}
		}
		if tp.Trades[0].Quantity != 6 || tp.Trades[1].Quantity != 4 {
			return fmt.Errorf("tape quantities: %+v", tp.Trades)
		}
		ql, err := bob.Quote(ctx, "AAPL")
		if err != nil {
			return err
		}
		q := ql.Quotes[0]
		if q.Bid != "188.00" || q.BidSize != 1 || q.Ask != "190.00" || q.AskSize != 5 || q.Last != "189.00" || q.Change != "-0.10" ||
			q.ChangePct != "-0.05" || q.Volume != 10 || q.RefPrice != "189.10" || q.TradeSeq != 2 || q.Time == "" || q.Open != "189.00" {
			return fmt.Errorf("quote: %+v", q)
		}
		bk, err := alice.Book(ctx, "AAPL", 5)
		if err != nil {
			return err
		}
		if len(bk.Bids) != 1 || len(bk.Asks) != 1 || bk.Bids[0] != (transport.BookLevel{Price: q.Bid, Quantity: q.BidSize, Orders: 1}) ||
			bk.Asks[0] != (transport.BookLevel{Price: q.Ask, Quantity: q.AskSize, Orders: 1}) || bk.Last != q.Last || bk.TradeSeq != q.TradeSeq {
			return fmt.Errorf("book %+v vs quote %+v", bk, q)
		}
		cs, err := bob.Candles(ctx, "AAPL", "1m", 0)
		if err != nil {
			return err
		}
		var vol int64
		var n int
		for _, k := range cs.Candles {
			vol += k.Volume
			n += k.Trades
		}
		if len(cs.Candles) == 0 || vol != 10 || n != 2 || cs.Candles[len(cs.Candles)-1].Close != "189.00" {
			return fmt.Errorf("candles: %+v", cs.Candles)
		}
		return nil
	})

	// Amend: a reduction keeps the order (and its place); a new price moves it.
	am, err := bob.Amend(ctx, offer.OrderID, 3, "")
	if err != nil || am.OrderID != offer.OrderID || am.Quantity != 3 || am.LimitPrice != "190.00" || am.Status != "open" {
		t.Fatalf("amend down: %+v, %v", am, err)
	}
	am, err = bob.Amend(ctx, offer.OrderID, 0, "190.50")
	if err != nil || am.OrderID != offer.OrderID || am.Quantity != 3 || am.LimitPrice != "190.50" || am.Status != "open" {
		t.Fatalf("amend price: %+v, %v", am, err)
	}
	if pb, err := bob.Portfolio(ctx, ""); err != nil || pb.Positions[0].AvailableQuantity != 87 {
		t.Fatalf("bob reservation after amends: %+v, %v", pb, err)
	}
	// Cancel releases the reservation.
	cn, err := alice.Cancel(ctx, bid.OrderID)
	if err != nil || cn.Status != "cancelled" || cn.OrderID != bid.OrderID {
		t.Fatalf("cancel: %+v, %v", cn, err)
	}
	if a, err := alice.Account(ctx, ""); err != nil || a.AvailableCash != "8110.00" {
		t.Fatalf("alice after cancel: %+v, %v", a, err)
	}
	open, err := bob.Orders(ctx, transport.OrdersQuery{Open: true})
	if err != nil || len(open.Orders) != 1 || open.Orders[0].OrderID != offer.OrderID || open.Orders[0].RemainingQuantity != 3 {
		t.Fatalf("bob's open orders: %+v, %v", open, err)
	}
	all, err := alice.Orders(ctx, transport.OrdersQuery{Symbol: "AAPL"})
	if err != nil || len(all.Orders) != 3 || all.Orders[0].OrderID != bid.OrderID || all.Orders[2].OrderID != mkt.OrderID {
		t.Fatalf("alice's orders: %+v, %v", all, err)
	}

	// Bad input: each is refused with a clear error and moves no money.
	ha, hb := holdings(t, alice), holdings(t, bob)
	unchanged := func(what string) {
		t.Helper()
		if got := holdings(t, alice); got != ha {
			t.Fatalf("%s changed alice: %s -> %s", what, ha, got)
		}
		if got := holdings(t, bob); got != hb {
			t.Fatalf("%s changed bob: %s -> %s", what, hb, got)
		}
	}
	orderReq := func(fields map[string]any) rawReq {
		body := map[string]any{"client_id": transport.NewClientID(), "symbol": "AAPL", "side": "buy", "quantity": 1, "limit_price": "150.00"}
		for k, v := range fields {
			if v == nil {
				delete(body, k)
			} else {
				body[k] = v
			}
		}
		return rawReq{method: "POST", path: "/v1/orders", token: alice.Token(), body: jsonBody(body)}
	}
	for _, bc := range []struct {
		name   string
		req    rawReq
		status int
		code   string
		parts  []string
	}{
		{"unknown symbol", orderReq(map[string]any{"symbol": "ZZZZ"}), 400, "unknown_symbol", []string{"ZZZZ"}},
		{"bad symbol", orderReq(map[string]any{"symbol": "A B"}), 400, "bad_request", []string{"symbol"}},
		{"qty 0", orderReq(map[string]any{"quantity": 0}), 400, "bad_request", []string{"quantity", "positive"}},
		{"qty negative", orderReq(map[string]any{"quantity": -3}), 400, "bad_request", []string{"quantity"}},
		{"qty huge", orderReq(map[string]any{"quantity": 1_000_001}), 400, "bad_request", []string{"quantity", "maximum"}},
		{"price off tick", orderReq(map[string]any{"limit_price": "1.234"}), 400, "bad_request", []string{"limit_price", "tick"}},
		{"price not numeric", orderReq(map[string]any{"limit_price": "abc"}), 400, "bad_request", []string{"limit_price"}},
		{"stop without price", orderReq(map[string]any{"type": "stop", "limit_price": nil}), 400, "bad_request", []string{"stop_price", "required"}},
		{"limit on a market order", orderReq(map[string]any{"type": "market"}), 400, "bad_request", []string{"limit_price", "market"}},
		{"bad side", orderReq(map[string]any{"side": "hold"}), 400, "bad_request", []string{"side"}},
		{"bad tif", orderReq(map[string]any{"tif": "forever"}), 400, "bad_request", []string{"tif"}},
		{"bad type", orderReq(map[string]any{"type": "iceberg"}), 400, "bad_request", []string{"type"}},
		{"post-only ioc", orderReq(map[string]any{"post_only": true, "tif": "ioc"}), 400, "bad_request", []string{"post_only"}},
		{"no client id", orderReq(map[string]any{"client_id": nil}), 400, "bad_request", []string{"client_id"}},
		{"long client id", orderReq(map[string]any{"client_id": strings.Repeat("x", 65)}), 400, "bad_request", []string{"client_id"}},
		{"cancel unknown", rawReq{method: "DELETE", path: "/v1/orders/999999", token: alice.Token()}, 404, "unknown_order", []string{"999999"}},
		{"cancel not mine", rawReq{method: "DELETE", path: fmt.Sprintf("/v1/orders/%d", offer.OrderID), token: alice.Token()}, 403, "not_owner", nil},
		{"amend not mine", rawReq{method: "PATCH", path: fmt.Sprintf("/v1/orders/%d", offer.OrderID), token: alice.Token(), body: jsonBody(map[string]any{"quantity": 1})}, 403, "not_owner", nil},
		{"cancel finished", rawReq{method: "DELETE", path: fmt.Sprintf("/v1/orders/%d", lim.OrderID), token: alice.Token()}, 422, "order_not_open", []string{"filled"}},
		{"read not mine", rawReq{method: "GET", path: fmt.Sprintf("/v1/orders/%d", offer.OrderID), token: alice.Token()}, 403, "not_owner", nil},
		{"unknown client id", rawReq{method: "GET", path: "/v1/orders?client_id=never-sent", token: alice.Token()}, 404, "unknown_order", []string{"never-sent"}},
		{"quote unknown", rawReq{method: "GET", path: "/v1/market/ZZZZ/quote"}, 404, "unknown_symbol", []string{"ZZZZ"}},
		{"book unknown", rawReq{method: "GET", path: "/v1/market/ZZZZ/book"}, 404, "unknown_symbol", nil},
		{"candles bad interval", rawReq{method: "GET", path: "/v1/market/AAPL/candles?interval=2m"}, 400, "bad_request", []string{"interval"}},
		{"shares unknown symbol", rawReq{method: "POST", path: "/v1/account/deposit-shares", token: alice.Token(), body: jsonBody(map[string]any{"symbol": "ZZZZ", "quantity": 1})}, 400, "unknown_symbol", nil},
		{"shares qty 0", rawReq{method: "POST", path: "/v1/account/deposit-shares", token: alice.Token(), body: jsonBody(map[string]any{"symbol": "AAPL", "quantity": 0})}, 400, "bad_request", []string{"quantity"}},
		{"withdraw too many shares", rawReq{method: "POST", path: "/v1/account/withdraw-shares", token: alice.Token(), body: jsonBody(map[string]any{"symbol": "AAPL", "quantity": 11})}, 422, "insufficient_shares", nil},
	} {
		r := send(t, fs[0].HTTPAddr, bc.req)
		apiError(t, r, bc.status, bc.code, bc.parts...)
		unchanged(bc.name)
	}

	// Business rejections: 422 with the stored order in the body.
	r := send(t, fs[0].HTTPAddr, orderReq(map[string]any{"limit_price": "190.50", "post_only": true}))
	var eb transport.OrderErrorBody
	if r.status != 422 || json.Unmarshal(r.body, &eb) != nil || eb.Error.Code != "post_only_would_take" || eb.Order == nil ||
		eb.Order.Status != "rejected" || eb.Order.OrderID == 0 || eb.Order.Reason == "" {
		t.Fatalf("post-only rejection body: %s", r)
	}
	unchanged("post-only via HTTP")
	o, err := alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "190.50", PostOnly: true})
	mustRejected(t, o, err, "post_only_would_take")
	unchanged("post-only")
	o, err = alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 40, LimitPrice: "190.50", TIF: "fok"})
	mustRejected(t, o, err, "fok_cannot_fill")
	unchanged("fok")
	o, err = alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "sell", Quantity: 11, LimitPrice: "189.00"})
	mustRejected(t, o, err, "insufficient_shares")
	unchanged("oversell")
	o, err = alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 1000, LimitPrice: "190.00"})
	mustRejected(t, o, err, "insufficient_funds")
	unchanged("overspend")
	o, err = alice.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "250.00"})
	mustRejected(t, o, err, "beyond_collar")
	unchanged("beyond collar")
	// A rejected order's client ID repeats as the same rejection.
	rej := mustRejected(t, o, err, "beyond_collar")
	o2, err := alice.PlaceOrder(ctx, transport.OrderRequest{ClientID: rej.Order.ClientID, Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "250.00"})
	if rej2 := mustRejected(t, o2, err, "beyond_collar"); rej2.Order.OrderID != rej.Order.OrderID {
		t.Fatalf("repeat of a rejected order: %+v vs %+v", rej2.Order, rej.Order)
	}
	if _, err := alice.Cancel(ctx, offer.OrderID); transport.ErrorCode(err) != "not_owner" {
		t.Fatalf("client cancel of another's order: %v", err)
	}
	if _, err := alice.Cancel(ctx, 999999); transport.ErrorCode(err) != "unknown_order" {
		t.Fatalf("client cancel of an unknown order: %v", err)
	}
	if _, err := bob.Amend(ctx, offer.OrderID, 0, "150.00"); transport.ErrorCode(err) != "beyond_collar" {
		t.Fatalf("amend beyond the collar: %v", err)
	}
	unchanged("client-side rejections")

	// Conservation: the two traders hold all the cash deposited and all
	// the shares; the state machine agrees on every node.
	pa, _ = alice.Portfolio(ctx, "")
	pb, _ = bob.Portfolio(ctx, "")
	if got := cents(t, pa.Cash) + cents(t, pb.Cash); got != 1_000_000 {
		t.Fatalf("cash total %s, want 10000.00", fmtCents(got))
	}
	if got := pa.Positions[0].Quantity + pb.Positions[0].Quantity; got != 100 {
		t.Fatalf("share total %d, want 100", got)
	}
	c.EnsureSame()
	for _, tn := range c.Live() {
		err := tn.Node.FSM().View(func(v *fsm.View) error {
			cash, reserved, shares := v.Totals()
			if cash != 1_000_000 || shares["AAPL"] != 100 || len(shares) != 1 {
				return fmt.Errorf("totals: cash %d, shares %v", cash, shares)
			}
			if reserved != 0 { // only bob's sell rests; it holds shares, not cash
				return fmt.Errorf("reserved cash %d", reserved)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tn.ID, err)
		}
	}
}
