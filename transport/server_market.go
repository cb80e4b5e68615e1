package transport

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
)

// marketRoutes registers the exchange API: instruments, share transfers,
// orders, fills, statement, portfolio and market data.
func (s *Server) marketRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /v1/stream", s.stream)
	m.HandleFunc("POST /v1/orders/stream", s.auth(s.orderStream))
	m.HandleFunc("GET /v1/symbols", s.symbols)
	m.HandleFunc("POST /v1/account/deposit-shares", s.auth(s.shares(fsm.TypeDepositShares)))
	m.HandleFunc("POST /v1/account/withdraw-shares", s.auth(s.shares(fsm.TypeWithdrawShares)))
	m.HandleFunc("POST /v1/orders", s.auth(s.placeOrder))
	m.HandleFunc("GET /v1/orders", s.auth(s.listOrders))
	m.HandleFunc("GET /v1/orders/{id}", s.auth(s.getOrder))
	m.HandleFunc("DELETE /v1/orders/{id}", s.auth(s.cancelOrder))
	m.HandleFunc("PATCH /v1/orders/{id}", s.auth(s.amendOrder))
	m.HandleFunc("GET /v1/fills", s.auth(s.fills))
	m.HandleFunc("GET /v1/activity", s.auth(s.activity))
	m.HandleFunc("GET /v1/portfolio", s.auth(s.portfolio))
	m.HandleFunc("GET /v1/quotes", s.quotes)
	m.HandleFunc("GET /v1/market/{symbol}/quote", s.quote)
	m.HandleFunc("GET /v1/market/{symbol}/book", s.book)
	m.HandleFunc("GET /v1/market/{symbol}/trades", s.trades)
	m.HandleFunc("GET /v1/market/{symbol}/candles", s.candles)
}

// ---- formatting ----

// price formats cents, "" for 0 (no such price).
func price(c int64) string {
	if c == 0 {
		return ""
	}
	return market.FormatPrice(c)
}

func money(c int64) string { return trader.Cents(c).String() }

// timeString formats unix nanoseconds, "" for 0.
func timeString(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// OrderView converts a state-machine order to its API form.
func OrderView(o *market.Order, replay bool, index uint64) Order {
	out := Order{
		OrderID: o.ID, ClientID: o.ClientID, Symbol: o.Symbol,
		Side: o.Side.String(), Type: o.Type.String(), TIF: o.TIF.String(),
		Quantity: o.Qty, FilledQuantity: o.Filled,
		LimitPrice: price(o.Limit), StopPrice: price(o.Stop), AvgFillPrice: price(o.AvgFillPrice()),
		Status: o.Status.String(), Reason: o.Reason, RejectCode: o.RejectCode,
		PostOnly: o.PostOnly, Triggered: o.Triggered,
		CreatedAt: timeString(o.Created), UpdatedAt: timeString(o.Updated), ExpiresAt: timeString(o.ExpiresAt),
		Replayed: replay, AppliedIndex: index,
	}
	if o.Status.Active() {
		out.RemainingQuantity = o.Remaining()
	}
	return out
}

// PositionView converts a holding to its API form.
func PositionView(p *trader.Position, index uint64, replay bool) Position {
	return Position{
		Symbol: p.Symbol, Quantity: p.Qty, AvailableQuantity: p.Available(), AvgCost: money(p.AvgCost()),
		AppliedIndex: index, Replayed: replay,
	}
}

// ---- validation ----

// NormalizeSymbol upper-cases a symbol and checks its form.
func NormalizeSymbol(s string) (string, error) {
	if s == "" {
		return "", errors.New("required")
	}
	up := strings.ToUpper(s)
	if err := fsm.ValidateSymbol(up); err != nil {
		return "", fmt.Errorf("%q: symbols are 1 to 12 characters A-Z, 0-9, '.' or '-'", s)
	}
	return up, nil
}

// ValidateClientID checks a client order ID: 1 to 64 printable ASCII
// characters without spaces.
func ValidateClientID(id string) error {
	if id == "" {
		return errors.New("required: 1 to 64 printable ASCII characters naming the order (the client generates one when you give none)")
	}
	if len(id) > MaxClientIDLen {
		return fmt.Errorf("at most %d characters, got %d", MaxClientIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("%q: only printable ASCII characters without spaces", id)
		}
	}
	return nil
}

// NewClientID returns a fresh client order ID: "c-", 12 hex digits of
// the time in milliseconds and 12 random ones (48 bits), increasing over
// time like NewIdempotencyKey.
func NewClientID() string {
	k := NewIdempotencyKey() // 12 digits of time, then random ones
	return "c-" + k[:12] + k[20:]
}

func badRequest(field, format string, args ...any) *APIError {
	return &APIError{Status: 400, Code: CodeBadRequest, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// ParseQuantity parses a whole number of shares between 1 and max.
func ParseQuantity(s string, max int64) (int64, error) {
	q, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number of shares", s)
	}
	return q, CheckQuantity(q, max)
}

// CheckQuantity checks a share quantity is between 1 and max.
func CheckQuantity(q, max int64) error {
	if q <= 0 {
		return fmt.Errorf("must be positive, got %d", q)
	}
	if q > max {
		return fmt.Errorf("%d exceeds the maximum %d", q, max)
	}
	return nil
}

// ValidateOrderRequest checks every field of an order request, fills in
// the inferred type and default time in force, upper-cases the symbol,
// and returns the order it describes. Errors name the field. Whether the
// symbol exists is not checked here.
func ValidateOrderRequest(req *OrderRequest) (*market.Order, *APIError) {
	if err := ValidateClientID(req.ClientID); err != nil {
		return nil, badRequest("client_id", "%v", err)
	}
	sym, err := NormalizeSymbol(req.Symbol)
	if err != nil {
		return nil, badRequest("symbol", "%v", err)
	}
	req.Symbol = sym
	var side market.Side
	switch strings.ToLower(req.Side) {
	case "buy":
		side = market.Buy
	case "sell":
		side = market.Sell
	default:
		return nil, badRequest("side", "must be buy or sell, got %q", req.Side)
	}
	if err := CheckQuantity(req.Quantity, market.MaxQuantity); err != nil {
		return nil, badRequest("quantity", "%v", err)
	}
	var limit, stop int64
	if req.LimitPrice != "" {
		if limit, err = market.ParsePrice(req.LimitPrice); err != nil {
			return nil, badRequest("limit_price", "%v", err)
		}
	}
	if req.StopPrice != "" {
		if stop, err = market.ParsePrice(req.StopPrice); err != nil {
			return nil, badRequest("stop_price", "%v", err)
		}
	}
	var typ market.Type
	switch strings.ToLower(req.Type) {
	case "":
		switch {
		case limit != 0 && stop != 0:
			typ = market.StopLimit
		case limit != 0:
			typ = market.Limit
		case stop != 0:
			typ = market.Stop
		default:
			typ = market.Market
		}
	case "market":
		typ = market.Market
	case "limit":
		typ = market.Limit
	case "stop":
		typ = market.Stop
	case "stop_limit":
		typ = market.StopLimit
	default:
		return nil, badRequest("type", "must be market, limit, stop or stop_limit, got %q", req.Type)
	}
	req.Type = typ.String()
	hasLimit := typ == market.Limit || typ == market.StopLimit
	hasStop := typ == market.Stop || typ == market.StopLimit
	switch {
	case hasLimit && limit == 0:
		return nil, badRequest("limit_price", "required for a %s order", typ)
	case !hasLimit && limit != 0:
		return nil, badRequest("limit_price", "a %s order takes no limit price", typ)
	case hasStop && stop == 0:
		return nil, badRequest("stop_price", "required for a %s order", typ)
	case !hasStop && stop != 0:
		return nil, badRequest("stop_price", "a %s order takes no stop price", typ)
	}
	var tif market.TIF
	if req.TIF == "" {
		tif = market.GTC
		if !hasLimit {
			tif = market.IOC
		}
	} else if tif, err = market.ParseTIF(req.TIF); err != nil {
		return nil, badRequest("tif", "must be gtc, day, ioc or fok, got %q", req.TIF)
	}
	req.TIF = tif.String()
	if typ == market.Market && (tif == market.GTC || tif == market.DAY) {
		return nil, badRequest("tif", "a market order never rests: use ioc or fok, not %s", tif)
	}
	if req.PostOnly {
		if !hasLimit {
			return nil, badRequest("post_only", "a %s order cannot be post-only: it has no limit price to rest at", typ)
		}
		if tif == market.IOC || tif == market.FOK {
			return nil, badRequest("post_only", "a post-only order must be able to rest: use tif gtc or day, not %s", tif)
		}
	}
	o := &market.Order{
		ClientID: req.ClientID, Symbol: sym, Side: side, Type: typ, TIF: tif, PostOnly: req.PostOnly,
		Qty: req.Quantity, Limit: limit, Stop: stop,
	}
	if err := market.Validate(o); err != nil {
		return nil, badRequest("order", "%v", err)
	}
	return o, nil
}

// marketResultError maps a state machine rejection to an API error.
func marketResultError(res *fsm.Result) *APIError { return resultError(res) }

// consistencyParam reads ?consistency= with a default.
func consistencyParam(r *http.Request, def Consistency) (Consistency, *APIError) {
	c, err := ParseConsistency(r.URL.Query().Get("consistency"), def)
	if err != nil {
		return "", &APIError{Status: 400, Code: CodeBadRequest, Message: strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": ")}
	}
	return c, nil
}

// intParam reads a positive integer query parameter with a default and a
// maximum.
func intParam(q url.Values, name string, def, max int) (int, *APIError) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, badRequest(name, "must be a positive whole number, got %q", s)
	}
	if n > max {
		return 0, badRequest(name, "at most %d, got %d", max, n)
	}
	return n, nil
}

func orderIDParam(r *http.Request) (uint64, *APIError) {
	s := r.PathValue("id")
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, badRequest("order id", "must be a positive whole number, got %q", s)
	}
	return id, nil
}

func unknownSymbol(sym string) *APIError {
	return &APIError{Status: 404, Code: CodeUnknownSymbol, Message: fmt.Sprintf("symbol: unknown symbol %q: GET /v1/symbols lists them", sym)}
}

// checkSymbol normalizes a symbol from a request body and checks, on this
// node's state, that it is listed. Unknown symbols are a 400: bad input.
func (s *Server) checkSymbol(raw string) (string, *APIError) {
	sym, err := NormalizeSymbol(raw)
	if err != nil {
		return "", badRequest("symbol", "%v", err)
	}
	if !s.b.HasSymbol(sym) {
		e := unknownSymbol(sym)
		e.Status = 400
		return "", e
	}
	return sym, nil
}

// ---- instruments and shares ----

func (s *Server) symbols(w http.ResponseWriter, r *http.Request) {
	c, e := consistencyParam(r, Stale)
	if e != nil {
		writeError(w, e)
		return
	}
	out := SymbolList{Symbols: []Symbol{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		for _, in := range v.Instruments() {
			out.Symbols = append(out.Symbols, Symbol{Symbol: in.Symbol, Name: in.Name, RefPrice: market.FormatPrice(in.RefPrice), Tick: "0.01", Lot: 1})
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

func (s *Server) shares(t fsm.Type) authed {
	return func(w http.ResponseWriter, r *http.Request, p Principal) {
		var req SharesRequest
		if e := decodeBody(w, r, &req); e != nil {
			writeError(w, e)
			return
		}
		if _, err := NormalizeSymbol(req.Symbol); err != nil {
			writeError(w, badRequest("symbol", "%v", err))
			return
		}
		if err := CheckQuantity(req.Quantity, trader.MaxShares); err != nil {
			writeError(w, badRequest("quantity", "%v", err))
			return
		}
		if e := checkKey(req.IdempotencyKey); e != nil {
			writeError(w, e)
			return
		}
		sym, e := s.checkSymbol(req.Symbol)
		if e != nil {
			writeError(w, e)
			return
		}
		res, err := s.b.Apply(r.Context(), &fsm.Command{Type: t, Account: p.AccountID, Key: req.IdempotencyKey, Symbol: sym, Qty: req.Quantity})
		replyApplied(w, 200, res, err, "position", func(res *fsm.Result) any {
			if res.Position == nil {
				return nil
			}
			return PositionView(res.Position, res.Index, res.Replay)
		})
	}
}

// ---- orders ----

func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request, p Principal) {
	var req OrderRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	o, e := ValidateOrderRequest(&req)
	if e != nil {
		writeError(w, e)
		return
	}
	if _, e := s.checkSymbol(o.Symbol); e != nil {
		writeError(w, e)
		return
	}
	// Orders are deduplicated by client ID, not by an idempotency key: a
	// repeat returns the first order, whatever its fields.
	res, err := s.b.Apply(r.Context(), &fsm.Command{
		Type: fsm.TypePlaceOrder, Account: p.AccountID, ClientID: o.ClientID, Symbol: o.Symbol,
		Side: uint8(o.Side), OrdType: uint8(o.Type), TIF: uint8(o.TIF), PostOnly: o.PostOnly,
		Qty: o.Qty, Limit: o.Limit, Stop: o.Stop,
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	if res.Code != fsm.CodeOK {
		ae := marketResultError(res)
		body := OrderErrorBody{Error: *ae}
		if res.Order != nil {
			ov := OrderView(res.Order, res.Replay, res.Index)
			body.Order = &ov
		}
		writeJSON(w, ae.Status, body)
		return
	}
	if res.Order == nil {
		writeError(w, &APIError{Status: 500, Code: CodeInternal, Message: "order applied without an order result"})
		return
	}
	status := http.StatusCreated
	if res.Replay {
		status = http.StatusOK
	}
	writeJSON(w, status, OrderView(res.Order, res.Replay, res.Index))
}

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	c, e := consistencyParam(r, Linearizable)
	if e != nil {
		writeError(w, e)
		return
	}
	open := false
	if v := q.Get("open"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, badRequest("open", "must be true or false, got %q", v))
			return
		}
		open = b
	}
	sym, e := symbolFilter(q)
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := intParam(q, "limit", DefaultOrdersLimit, MaxOrdersLimit)
	if e != nil {
		writeError(w, e)
		return
	}
	cid := q.Get("client_id")
	if q.Has("client_id") {
		if err := ValidateClientID(cid); err != nil {
			writeError(w, badRequest("client_id", "%v", err))
			return
		}
	}
	out := OrderList{Orders: []Order{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		if cid != "" {
			o, ok := v.OrderByClientID(p.AccountID, cid)
			if !ok {
				return &APIError{Status: 404, Code: CodeUnknownOrder, Message: fmt.Sprintf("client_id: no order with client ID %q", cid)}
			}
			out.Orders = append(out.Orders, OrderView(o, false, 0))
			return nil
		}
		for _, o := range v.Orders(p.AccountID, open, sym, limit) {
			out.Orders = append(out.Orders, OrderView(o, false, 0))
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

// readOwnOrder reads an order the principal owns.
func (s *Server) readOwnOrder(r *http.Request, c Consistency, p Principal, id uint64) (*market.Order, uint64, *APIError) {
	var o *market.Order
	var idx uint64
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		idx = v.AppliedIndex()
		var ok bool
		if o, ok = v.Order(id); !ok {
			return &APIError{Status: 404, Code: CodeUnknownOrder, Message: fmt.Sprintf("order %d: unknown order", id)}
		}
		if o.Account != p.AccountID {
			return &APIError{Status: 403, Code: CodeNotOwner, Message: fmt.Sprintf("order %d belongs to another trader", id)}
		}
		return nil
	})
	if err != nil {
		return nil, 0, toAPIError(err)
	}
	return o, idx, nil
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request, p Principal) {
	id, e := orderIDParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	c, e := consistencyParam(r, Linearizable)
	if e != nil {
		writeError(w, e)
		return
	}
	o, idx, e := s.readOwnOrder(r, c, p, id)
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, 200, OrderView(o, false, idx))
}

// precheckChange refuses, from this node's own state and without touching
// the log, a change of an order that is another trader's or already
// finished: both facts never change once true. An order this node has not
// seen yet goes to the state machine, which decides.
func (s *Server) precheckChange(r *http.Request, p Principal, id uint64) (*market.Order, *APIError) {
	o, _, e := s.readOwnOrder(r, Stale, p, id)
	if e != nil {
		if e.Code == CodeUnknownOrder {
			return nil, nil
		}
		return nil, e
	}
	if !o.Status.Active() {
		return nil, &APIError{Status: 422, Code: CodeOrderNotOpen, Message: fmt.Sprintf("order %d is %s, no longer open", id, o.Status)}
	}
	return o, nil
}

func (s *Server) writeOrderResult(w http.ResponseWriter, res *fsm.Result, err error) {
	replyApplied(w, 200, res, err, "order", func(res *fsm.Result) any {
		if res.Order == nil {
			return nil
		}
		return OrderView(res.Order, res.Replay, res.Index)
	})
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request, p Principal) {
	id, e := orderIDParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	if _, e := s.precheckChange(r, p, id); e != nil {
		writeError(w, e)
		return
	}
	res, err := s.b.Apply(r.Context(), &fsm.Command{Type: fsm.TypeCancelOrder, Account: p.AccountID, OrderID: id})
	s.writeOrderResult(w, res, err)
}

func (s *Server) amendOrder(w http.ResponseWriter, r *http.Request, p Principal) {
	id, e := orderIDParam(r)
	if e != nil {
		writeError(w, e)
		return
	}
	var req AmendRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if req.Quantity == nil && req.LimitPrice == "" {
		writeError(w, badRequest("amend", "give quantity and/or limit_price"))
		return
	}
	cmd := &fsm.Command{Type: fsm.TypeAmendOrder, Account: p.AccountID, OrderID: id}
	if req.Quantity != nil {
		if err := CheckQuantity(*req.Quantity, market.MaxQuantity); err != nil {
			writeError(w, badRequest("quantity", "%v", err))
			return
		}
		cmd.Qty = *req.Quantity
	}
	if req.LimitPrice != "" {
		lp, err := market.ParsePrice(req.LimitPrice)
		if err != nil {
			writeError(w, badRequest("limit_price", "%v", err))
			return
		}
		cmd.Limit = lp
	}
	o, e := s.precheckChange(r, p, id)
	if e != nil {
		writeError(w, e)
		return
	}
	if o != nil {
		if cmd.Limit != 0 && o.Type != market.Limit && o.Type != market.StopLimit {
			writeError(w, badRequest("limit_price", "order %d is a %s order; only limit and stop_limit orders have a limit price", id, o.Type))
			return
		}
		if cmd.Qty != 0 && cmd.Qty <= o.Filled {
			writeError(w, badRequest("quantity", "the new total quantity %d must exceed the %d already filled", cmd.Qty, o.Filled))
			return
		}
	}
	res, err := s.b.Apply(r.Context(), cmd)
	s.writeOrderResult(w, res, err)
}

// ---- fills, activity, portfolio ----

func (s *Server) fills(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	c, e := consistencyParam(r, Linearizable)
	if e != nil {
		writeError(w, e)
		return
	}
	sym, e := symbolFilter(q)
	if e != nil {
		writeError(w, e)
		return
	}
	limit, e := intParam(q, "limit", DefaultFillsLimit, MaxFillsLimit)
	if e != nil {
		writeError(w, e)
		return
	}
	out := FillList{Fills: []Fill{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		entries := v.Statement(p.AccountID, 0, 0)
		for i := len(entries) - 1; i >= 0 && len(out.Fills) < limit; i-- {
			en := entries[i]
			if (en.Kind != trader.EntryBuy && en.Kind != trader.EntrySell) || (sym != "" && en.Symbol != sym) {
				continue
			}
			out.Fills = append(out.Fills, Fill{
				TradeSeq: en.TradeSeq, OrderID: en.OrderID, Symbol: en.Symbol, Side: en.Kind,
				Quantity: abs(en.Qty), Price: market.FormatPrice(en.Price), Amount: money(abs(en.Cash)), Time: timeString(en.Time),
			})
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func (s *Server) activity(w http.ResponseWriter, r *http.Request, p Principal) {
	q := r.URL.Query()
	c, e := consistencyParam(r, Linearizable)
	if e != nil {
		writeError(w, e)
		return
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, badRequest("after", "must be a statement sequence number (0 or more), got %q", v))
			return
		}
		after = n
	}
	limit, e := intParam(q, "limit", DefaultActivity, MaxActivity)
	if e != nil {
		writeError(w, e)
		return
	}
	out := Activity{Entries: []ActivityEntry{}, NextAfter: after, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		a, ok := v.Account(p.AccountID)
		if !ok {
			return &APIError{Status: 404, Code: fsm.CodeUnknownAccount, Message: fmt.Sprintf("account %d: unknown account", p.AccountID)}
		}
		out.Cash = a.Cash.String()
		entries := v.Statement(p.AccountID, after, limit+1)
		if len(entries) > limit {
			entries, out.More = entries[:limit], true
		}
		for _, en := range entries {
			out.Entries = append(out.Entries, ActivityEntry{
				Seq: en.Seq, Time: timeString(en.Time), Kind: en.Kind, Symbol: en.Symbol, Quantity: en.Qty,
				Price: price(en.Price), Amount: money(en.Cash), CashBalance: money(en.CashAfter), ShareBalance: en.SharesAfter,
				OrderID: en.OrderID, TradeSeq: en.TradeSeq,
			})
			out.NextAfter = en.Seq
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

// lastPrice is what a holding is valued at: the last trade, or the
// instrument's reference price before any trade.
func lastPrice(v *fsm.View, sym string) int64 {
	if st, ok := v.BookStats(sym); ok && st.Last > 0 {
		return st.Last
	}
	if in, ok := v.Instrument(sym); ok {
		return in.RefPrice
	}
	return 0
}

func (s *Server) portfolio(w http.ResponseWriter, r *http.Request, p Principal) {
	c, e := consistencyParam(r, Linearizable)
	if e != nil {
		writeError(w, e)
		return
	}
	out := Portfolio{Positions: []PortfolioPosition{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		a, ok := v.Account(p.AccountID)
		if !ok {
			return &APIError{Status: 404, Code: fsm.CodeUnknownAccount, Message: fmt.Sprintf("account %d: unknown account", p.AccountID)}
		}
		var realized, unrealized, value int64
		for _, pos := range v.Positions(p.AccountID) {
			last := lastPrice(v, pos.Symbol)
			mv := pos.Qty * last
			un := mv - pos.Cost
			realized += pos.Realized
			unrealized += un
			value += mv
			out.Positions = append(out.Positions, PortfolioPosition{
				Symbol: pos.Symbol, Quantity: pos.Qty, AvailableQuantity: pos.Available(),
				AvgCost: money(pos.AvgCost()), CostBasis: money(pos.Cost), LastPrice: price(last),
				MarketValue: money(mv), UnrealizedPnL: money(un), RealizedPnL: money(pos.Realized),
			})
		}
		out.Cash, out.AvailableCash = a.Cash.String(), a.Available().String()
		out.RealizedPnL, out.UnrealizedPnL, out.MarketValue = money(realized), money(unrealized), money(value)
		out.Equity = money(int64(a.Cash) + value)
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

// ---- market data ----

// marketSymbol reads the {symbol} path value.
func marketSymbol(r *http.Request) (string, *APIError) {
	raw := r.PathValue("symbol")
	sym, err := NormalizeSymbol(raw)
	if err != nil {
		return "", unknownSymbol(raw)
	}
	return sym, nil
}

// dayStart is the first instant (unix ns) of the current UTC day. Market
// data is outside the state machine, so reading the clock here is fine.
func dayStart() int64 { return market.EndOfUTCDay(time.Now().UnixNano()) - 86_400_000_000_000 }

// quoteFromView fills a quote's fields that come from stored state.
func quoteFromView(v *fsm.View, sym string, today int64) (Quote, bool) {
	in, ok := v.Instrument(sym)
	if !ok {
		return Quote{}, false
	}
	q := Quote{Symbol: sym, RefPrice: market.FormatPrice(in.RefPrice)}
	st, _ := v.BookStats(sym)
	q.TradeSeq = st.TradeSeq
	if st.Last > 0 {
		q.Last = market.FormatPrice(st.Last)
		ch := st.Last - in.RefPrice
		q.Change = market.FormatPrice(ch)
		q.ChangePct = percent(ch, in.RefPrice)
		q.Time = timeString(st.LastTime)
	}
	if st.DayStart == today && st.Volume > 0 {
		q.Volume = st.Volume
		q.Open, q.High, q.Low = price(st.Open), price(st.High), price(st.Low)
	}
	return q, true
}

// percent formats 100*num/den with 2 decimals, rounded half away from zero.
func percent(num, den int64) string {
	if den == 0 {
		return ""
	}
	bp := num * 10_000 // hundredths of a percent, times den
	neg := bp < 0
	if neg {
		bp = -bp
	}
	h := (bp + den/2) / den
	sign := ""
	if neg && h != 0 {
		sign = "-"
	}
	return fmt.Sprintf("%s%d.%02d", sign, h/100, h%100)
}

// addTopOfBook fills bid and ask from the in-memory book, which is at
// least as new as the state the quote was read from.
func (s *Server) addTopOfBook(q *Quote) {
	q.Stale = s.b.MarketDataStale()
	if snap, ok := s.b.MarketBook(q.Symbol, 1); ok {
		if len(snap.Bids) > 0 {
			q.Bid, q.BidSize = market.FormatPrice(snap.Bids[0].Price), snap.Bids[0].Qty
		}
		if len(snap.Asks) > 0 {
			q.Ask, q.AskSize = market.FormatPrice(snap.Asks[0].Price), snap.Asks[0].Qty
		}
	}
}

func (s *Server) quote(w http.ResponseWriter, r *http.Request) {
	sym, e := marketSymbol(r)
	if e != nil {
		writeError(w, e)
		return
	}
	c, e := consistencyParam(r, Stale)
	if e != nil {
		writeError(w, e)
		return
	}
	var q Quote
	today := dayStart()
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		var ok bool
		if q, ok = quoteFromView(v, sym, today); !ok {
			return unknownSymbol(sym)
		}
		q.AppliedIndex = v.AppliedIndex()
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	// Outside the read transaction: the book lock is also taken by Apply.
	s.addTopOfBook(&q)
	q.Consistency = c
	writeJSON(w, 200, q)
}

func (s *Server) quotes(w http.ResponseWriter, r *http.Request) {
	c, e := consistencyParam(r, Stale)
	if e != nil {
		writeError(w, e)
		return
	}
	var syms []string
	for _, raw := range strings.Split(r.URL.Query().Get("symbols"), ",") {
		if raw = strings.TrimSpace(raw); raw == "" {
			continue
		}
		sym, err := NormalizeSymbol(raw)
		if err != nil {
			writeError(w, unknownSymbol(raw))
			return
		}
		if !slices.Contains(syms, sym) {
			syms = append(syms, sym)
		}
	}
	if len(syms) > MaxQuoteSymbols {
		writeError(w, badRequest("symbols", "at most %d symbols, got %d", MaxQuoteSymbols, len(syms)))
		return
	}
	out := QuoteList{Quotes: []Quote{}, Consistency: c}
	today := dayStart()
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		out.AppliedIndex = v.AppliedIndex()
		if len(syms) == 0 {
			for _, in := range v.Instruments() {
				syms = append(syms, in.Symbol)
			}
		}
		for _, sym := range syms {
			q, ok := quoteFromView(v, sym, today)
			if !ok {
				return unknownSymbol(sym)
			}
			out.Quotes = append(out.Quotes, q)
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	for i := range out.Quotes {
		s.addTopOfBook(&out.Quotes[i])
	}
	writeJSON(w, 200, out)
}

func levels(ls []market.Level) []BookLevel {
	out := make([]BookLevel, 0, len(ls))
	for _, l := range ls {
		out = append(out, BookLevel{Price: market.FormatPrice(l.Price), Quantity: l.Qty, Orders: l.Orders})
	}
	return out
}

// marketQuery reads the symbol path value, the consistency (default stale)
// and one bounded integer parameter of a market-data request.
func marketQuery(r *http.Request, name string, def, max int) (string, Consistency, int, *APIError) {
	sym, e := marketSymbol(r)
	if e != nil {
		return "", "", 0, e
	}
	c, e := consistencyParam(r, Stale)
	if e != nil {
		return "", "", 0, e
	}
	n, e := intParam(r.URL.Query(), name, def, max)
	if e != nil {
		return "", "", 0, e
	}
	return sym, c, n, nil
}

func (s *Server) book(w http.ResponseWriter, r *http.Request) {
	sym, c, depth, e := marketQuery(r, "depth", DefaultBookDepth, MaxBookDepth)
	if e != nil {
		writeError(w, e)
		return
	}
	var idx uint64
	known := false
	if err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		idx = v.AppliedIndex()
		_, known = v.Instrument(sym)
		return nil
	}); err != nil {
		writeError(w, toAPIError(err))
		return
	}
	snap, ok := s.b.MarketBook(sym, depth)
	if !known || !ok {
		writeError(w, unknownSymbol(sym))
		return
	}
	writeJSON(w, 200, Book{
		Symbol: sym, Bids: levels(snap.Bids), Asks: levels(snap.Asks), Last: price(snap.Last), RefPrice: price(snap.Ref),
		TradeSeq: snap.TradeSeq, Consistency: c, AppliedIndex: idx,
	})
}

func (s *Server) trades(w http.ResponseWriter, r *http.Request) {
	sym, c, limit, e := marketQuery(r, "limit", DefaultTradesLimit, MaxTradesLimit)
	if e != nil {
		writeError(w, e)
		return
	}
	out := Tape{Symbol: sym, Trades: []TapeTrade{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		if _, ok := v.Instrument(sym); !ok {
			return unknownSymbol(sym)
		}
		out.AppliedIndex = v.AppliedIndex()
		for _, t := range v.RecentTrades(sym, limit) {
			out.Trades = append(out.Trades, TapeTrade{Seq: t.Seq, Time: timeString(t.Time), Price: market.FormatPrice(t.Price), Quantity: t.Qty, TakerSide: t.TakerSide.String()})
		}
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

// CandleIntervals are the candle widths the API offers.
var CandleIntervals = map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "1h": time.Hour}

// candleChunk is how many trades one step of the backwards scan reads.
const candleChunk = 1000

func (s *Server) candles(w http.ResponseWriter, r *http.Request) {
	sym, e := marketSymbol(r)
	if e != nil {
		writeError(w, e)
		return
	}
	c, e := consistencyParam(r, Stale)
	if e != nil {
		writeError(w, e)
		return
	}
	q := r.URL.Query()
	ivName := q.Get("interval")
	if ivName == "" {
		ivName = "1m"
	}
	iv, ok := CandleIntervals[ivName]
	if !ok {
		writeError(w, badRequest("interval", "must be 1m, 5m or 1h, got %q", ivName))
		return
	}
	limit, e := intParam(q, "limit", DefaultCandles, MaxCandles)
	if e != nil {
		writeError(w, e)
		return
	}
	out := Candles{Symbol: sym, Interval: ivName, Candles: []Candle{}, Consistency: c}
	err := s.b.Read(r.Context(), c, func(v *fsm.View) error {
		if _, ok := v.Instrument(sym); !ok {
			return unknownSymbol(sym)
		}
		out.AppliedIndex = v.AppliedIndex()
		st, _ := v.BookStats(sym)
		out.Candles = buildCandles(v, sym, st.TradeSeq, int64(iv), limit)
		return nil
	})
	if err != nil {
		writeError(w, toAPIError(err))
		return
	}
	writeJSON(w, 200, out)
}

// buildCandles aggregates the newest trades into the newest limit
// intervals that had trades, oldest first, reading at most MaxCandleScan
// trades backwards from sequence newest. Leader-stamped times normally rise
// with the sequence; a bucket is found by its start either way.
func buildCandles(v *fsm.View, sym string, newest uint64, iv int64, limit int) []Candle {
	type agg struct {
		open, high, low, close int64
		vol                    int64
		n                      int
	}
	buckets := map[int64]*agg{}
	scanned := 0
	full := false
	for hi := newest; hi > 0 && scanned < MaxCandleScan && !full; {
		lo := uint64(1)
		if hi > candleChunk {
			lo = hi - candleChunk + 1
		}
		chunk := v.Trades(sym, lo, hi, 0)
		for i := len(chunk) - 1; i >= 0 && scanned < MaxCandleScan; i-- { // newest first
			t := chunk[i]
			scanned++
			start := t.Time - t.Time%iv
			if t.Time%iv < 0 {
				start -= iv
			}
			b, ok := buckets[start]
			if !ok {
				if len(buckets) == limit {
					full = true
					break
				}
				b = &agg{close: t.Price, high: t.Price, low: t.Price}
				buckets[start] = b
			}
			b.open = t.Price // scanning backwards: the earliest seen so far
			b.high = max(b.high, t.Price)
			b.low = min(b.low, t.Price)
			b.vol += t.Qty
			b.n++
		}
		hi = lo - 1
	}
	starts := make([]int64, 0, len(buckets))
	for st := range buckets {
		starts = append(starts, st)
	}
	slices.Sort(starts)
	out := make([]Candle, 0, len(starts))
	for _, st := range starts {
		b := buckets[st]
		out = append(out, Candle{
			Start: time.Unix(0, st).UTC().Format(time.RFC3339), Open: market.FormatPrice(b.open), High: market.FormatPrice(b.high),
			Low: market.FormatPrice(b.low), Close: market.FormatPrice(b.close), Volume: b.vol, Trades: b.n,
		})
	}
	return out
}

// symbolFilter reads the optional ?symbol= filter of a list endpoint.
func symbolFilter(q url.Values) (string, *APIError) {
	v := q.Get("symbol")
	if v == "" {
		return "", nil
	}
	sym, err := NormalizeSymbol(v)
	if err != nil {
		return "", badRequest("symbol", "%v", err)
	}
	return sym, nil
}
