package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/hats-trading/hats/market"
)

// OrderRejectedError is a placement the state machine refused (insufficient
// funds, post-only that would take, ...). The order was stored with status
// rejected; Order is that record when it could be read back, else nil.
type OrderRejectedError struct {
	Order *Order
	Err   *APIError
}

func (e *OrderRejectedError) Error() string {
	if e.Order != nil {
		return fmt.Sprintf("order %d rejected: %s", e.Order.OrderID, e.Err.Message)
	}
	return "order rejected: " + e.Err.Message
}

// Unwrap yields the API error, so ErrorCode reports the rejection's code.
func (e *OrderRejectedError) Unwrap() error { return e.Err }

// OrdersQuery selects the trader's orders (GET /v1/orders).
type OrdersQuery struct {
	Open        bool   // only open and partially filled orders
	Symbol      string // "" for every symbol
	Limit       int    // 0: the server's default
	Consistency Consistency
}

// FillsQuery selects the trader's fills (GET /v1/fills).
type FillsQuery struct {
	Symbol      string
	Limit       int
	Consistency Consistency
}

// ActivityQuery pages through the statement (GET /v1/activity).
type ActivityQuery struct {
	After       uint64 // statement sequence to start after; 0 from the start
	Limit       int
	Consistency Consistency
}

func consistencyQuery(q url.Values, c Consistency) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if c != "" {
		q.Set("consistency", string(c))
	}
	return q
}

func orderPath(id uint64) string { return "/v1/orders/" + strconv.FormatUint(id, 10) }

// Symbols lists the instruments (a stale read from any node).
func (c *Client) Symbols(ctx context.Context) (*SymbolList, error) {
	var out SymbolList
	if err := c.do(ctx, call{name: "symbols", method: http.MethodGet, path: "/v1/symbols", out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// DepositShares moves qty shares of symbol into the account. An empty key
// is replaced by a fresh one, used for every retry.
func (c *Client) DepositShares(ctx context.Context, symbol string, qty int64, key string) (*Position, error) {
	return c.shares(ctx, "deposit-shares", symbol, qty, key)
}

// WithdrawShares moves qty shares of symbol out of the account. An empty
// key is replaced by a fresh one, used for every retry.
func (c *Client) WithdrawShares(ctx context.Context, symbol string, qty int64, key string) (*Position, error) {
	return c.shares(ctx, "withdraw-shares", symbol, qty, key)
}

func (c *Client) shares(ctx context.Context, op, symbol string, qty int64, key string) (*Position, error) {
	if key == "" {
		key = NewIdempotencyKey()
	}
	var out Position
	err := c.do(ctx, call{name: op, method: http.MethodPost, path: "/v1/account/" + op,
		body: SharesRequest{Symbol: symbol, Quantity: qty, IdempotencyKey: key}, auth: true, mode: retryKeyed, key: key, out: &out})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// PlaceOrder enters an order. An empty ClientID is replaced by a fresh
// one, generated once and sent with every retry: the state machine answers
// a repeat with the first order, so a retry never places a second one. A
// call whose outcome stays unknown returns an *OutcomeUnknownError whose
// Key is the client ID; OrderByClientID resolves it. A rejection by the
// state machine returns the stored order (status rejected) together with an
// *OrderRejectedError.
func (c *Client) PlaceOrder(ctx context.Context, req OrderRequest) (*Order, error) {
	if req.ClientID == "" {
		req.ClientID = NewClientID()
	}
	ctx, cancel := context.WithTimeout(ctx, c.deadline)
	defer cancel()
	var out Order
	err := c.do(ctx, call{name: "place order", method: http.MethodPost, path: "/v1/orders", body: req, auth: true,
		mode: retryKeyed, key: req.ClientID, out: &out})
	if err == nil {
		return &out, nil
	}
	var ae *APIError
	var ou *OutcomeUnknownError
	if errors.As(err, &ou) || !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity {
		return nil, err
	}
	// A business rejection: the order is stored as rejected; learn its ID.
	rej := &OrderRejectedError{Err: ae}
	if o, rerr := c.OrderByClientID(ctx, req.ClientID); rerr == nil {
		rej.Order = o
		return o, rej
	}
	return nil, rej
}

// Order reads one of the trader's orders (linearizable).
func (c *Client) Order(ctx context.Context, id uint64) (*Order, error) {
	var out Order
	if err := c.do(ctx, call{name: "order", method: http.MethodGet, path: orderPath(id), auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// OrderByClientID finds one of the trader's orders by its client order ID
// (linearizable): how an unknown placement outcome is resolved. An order
// never placed yields an error with code unknown_order.
func (c *Client) OrderByClientID(ctx context.Context, clientID string) (*Order, error) {
	var out OrderList
	q := url.Values{"client_id": {clientID}}
	if err := c.do(ctx, call{name: "order by client id", method: http.MethodGet, path: "/v1/orders", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	if len(out.Orders) != 1 {
		return nil, &APIError{Status: http.StatusNotFound, Code: CodeUnknownOrder, Message: fmt.Sprintf("no order with client ID %q", clientID)}
	}
	o := out.Orders[0]
	o.AppliedIndex = out.AppliedIndex
	return &o, nil
}

// Orders lists the trader's orders, newest first.
func (c *Client) Orders(ctx context.Context, oq OrdersQuery) (*OrderList, error) {
	q := consistencyQuery(nil, oq.Consistency)
	if oq.Open {
		q.Set("open", "true")
	}
	if oq.Symbol != "" {
		q.Set("symbol", oq.Symbol)
	}
	if oq.Limit > 0 {
		q.Set("limit", strconv.Itoa(oq.Limit))
	}
	var out OrderList
	if err := c.do(ctx, call{name: "orders", method: http.MethodGet, path: "/v1/orders", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// maxResolveRounds bounds how often Cancel and Amend re-send after an
// unknown outcome before reporting it.
const maxResolveRounds = 3

// Cancel cancels one of the trader's open orders and returns it. A cancel
// is sent only while it may not yet have reached a node; when its outcome
// is unknown the order is read back: cancelled means done, still open
// means the cancel is sent again (cancelling twice is harmless).
func (c *Client) Cancel(ctx context.Context, id uint64) (*Order, error) {
	return c.change(ctx, "cancel", id, func(ctx context.Context) (*Order, error) {
		var out Order
		err := c.do(ctx, call{name: "cancel", method: http.MethodDelete, path: orderPath(id), auth: true, mode: retryUnsent, out: &out})
		if err != nil {
			return nil, err
		}
		return &out, nil
	}, func(o *Order) bool { return o.Status == StatusCancelled })
}

// Amend changes an open order's total quantity (filled shares included;
// 0 keeps it) and/or limit price ("" keeps it). Reducing the quantity keeps
// the order's place in the queue; a new price or a larger quantity loses
// it. When the outcome is unknown the order is read back: already at the
// asked quantity and price means done; otherwise the amend, whose target
// is absolute, is sent again.
func (c *Client) Amend(ctx context.Context, id uint64, qty int64, limit string) (*Order, error) {
	req := AmendRequest{LimitPrice: limit}
	if qty != 0 {
		req.Quantity = &qty
	}
	return c.change(ctx, "amend", id, func(ctx context.Context) (*Order, error) {
		var out Order
		err := c.do(ctx, call{name: "amend", method: http.MethodPatch, path: orderPath(id), body: req, auth: true, mode: retryUnsent, out: &out})
		if err != nil {
			return nil, err
		}
		return &out, nil
	}, func(o *Order) bool {
		return (qty == 0 || o.Quantity == qty) && (limit == "" || samePrice(o.LimitPrice, limit))
	})
}

// samePrice compares two decimal prices ("189" and "189.00" are equal).
func samePrice(a, b string) bool {
	ca, err1 := market.ParsePrice(a)
	cb, err2 := market.ParsePrice(b)
	return err1 == nil && err2 == nil && ca == cb
}

// change runs a cancel or amend, resolving an unknown outcome by reading
// the order back: done(order) says the change has taken effect.
func (c *Client) change(ctx context.Context, op string, id uint64, send func(context.Context) (*Order, error), done func(*Order) bool) (*Order, error) {
	ctx, cancel := context.WithTimeout(ctx, c.deadline)
	defer cancel()
	var unknown error
	for round := 0; round < maxResolveRounds; round++ {
		o, err := send(ctx)
		if err == nil {
			return o, nil
		}
		var ou *OutcomeUnknownError
		switch {
		case errors.As(err, &ou):
			unknown = err
		case unknown != nil && ErrorCode(err) == CodeOrderNotOpen:
			// An earlier try may have finished the order: look.
		default:
			return nil, err
		}
		cur, rerr := c.Order(ctx, id)
		if rerr != nil {
			return nil, unknown
		}
		switch {
		case done(cur):
			return cur, nil
		case cur.Active():
			continue // the change did not happen: send it again
		default:
			return cur, &APIError{Status: http.StatusUnprocessableEntity, Code: CodeOrderNotOpen,
				Message: fmt.Sprintf("%s: order %d is %s, no longer open", op, id, cur.Status)}
		}
	}
	return nil, unknown
}

// Fills lists the trader's executions, newest first.
func (c *Client) Fills(ctx context.Context, fq FillsQuery) (*FillList, error) {
	q := consistencyQuery(nil, fq.Consistency)
	if fq.Symbol != "" {
		q.Set("symbol", fq.Symbol)
	}
	if fq.Limit > 0 {
		q.Set("limit", strconv.Itoa(fq.Limit))
	}
	var out FillList
	if err := c.do(ctx, call{name: "fills", method: http.MethodGet, path: "/v1/fills", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Activity returns one page of the account statement, oldest first.
func (c *Client) Activity(ctx context.Context, aq ActivityQuery) (*Activity, error) {
	q := consistencyQuery(nil, aq.Consistency)
	if aq.After > 0 {
		q.Set("after", strconv.FormatUint(aq.After, 10))
	}
	if aq.Limit > 0 {
		q.Set("limit", strconv.Itoa(aq.Limit))
	}
	var out Activity
	if err := c.do(ctx, call{name: "activity", method: http.MethodGet, path: "/v1/activity", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Portfolio values the account's holdings ("" consistency: linearizable).
func (c *Client) Portfolio(ctx context.Context, consistency Consistency) (*Portfolio, error) {
	var out Portfolio
	q := consistencyQuery(nil, consistency)
	if err := c.do(ctx, call{name: "portfolio", method: http.MethodGet, path: "/v1/portfolio", query: q, auth: true, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Quote returns quotes for the symbols (all instruments when none given).
// Market data is a stale read from whichever node answers.
func (c *Client) Quote(ctx context.Context, symbols ...string) (*QuoteList, error) {
	q := url.Values{}
	if len(symbols) > 0 {
		q.Set("symbols", strings.Join(symbols, ","))
	}
	var out QuoteList
	if err := c.do(ctx, call{name: "quote", method: http.MethodGet, path: "/v1/quotes", query: q, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

func marketPath(sym, what string) string {
	return "/v1/market/" + url.PathEscape(sym) + "/" + what
}

// Book returns up to depth aggregated levels per side (0: the default).
func (c *Client) Book(ctx context.Context, symbol string, depth int) (*Book, error) {
	q := url.Values{}
	if depth > 0 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out Book
	if err := c.do(ctx, call{name: "book", method: http.MethodGet, path: marketPath(symbol, "book"), query: q, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Trades returns a symbol's newest trades, newest first (0: the default
// number).
func (c *Client) Trades(ctx context.Context, symbol string, limit int) (*Tape, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out Tape
	if err := c.do(ctx, call{name: "trades", method: http.MethodGet, path: marketPath(symbol, "trades"), query: q, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}

// Candles returns OHLCV candles of 1m, 5m or 1h ("" means 1m), oldest
// first.
func (c *Client) Candles(ctx context.Context, symbol, interval string, limit int) (*Candles, error) {
	q := url.Values{}
	if interval != "" {
		q.Set("interval", interval)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out Candles
	if err := c.do(ctx, call{name: "candles", method: http.MethodGet, path: marketPath(symbol, "candles"), query: q, out: &out}); err != nil {
		return nil, err
	}
	return &out, nil
}
