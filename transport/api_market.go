package transport

// Wire types of the exchange API: instruments, share transfers, orders,
// fills, the account statement, the portfolio and market data. Money and
// prices are decimal strings with two places ("189.10"); "" means "not
// applicable" (no limit price, no trade yet). Quantities are whole shares.
// Times are RFC 3339 with nanoseconds, in UTC.

// Exchange error codes set by the API itself (the state machine's codes,
// such as insufficient_funds or post_only_would_take, pass through).
const (
	CodeUnknownSymbol = "unknown_symbol"
	CodeUnknownOrder  = "unknown_order"
	CodeNotOwner      = "not_owner"
	CodeOrderNotOpen  = "order_not_open"
)

// Order statuses as the API spells them.
const (
	StatusOpen            = "open"
	StatusPartiallyFilled = "partially_filled"
	StatusFilled          = "filled"
	StatusCancelled       = "cancelled"
	StatusExpired         = "expired"
	StatusRejected        = "rejected"
)

// Limits of the exchange API's list and market-data reads.
const (
	MaxClientIDLen     = 64
	DefaultOrdersLimit = 100
	MaxOrdersLimit     = 1000
	DefaultFillsLimit  = 100
	MaxFillsLimit      = 1000
	DefaultActivity    = 1000
	MaxActivity        = 10000
	DefaultBookDepth   = 10
	MaxBookDepth       = 100
	DefaultTradesLimit = 50
	MaxTradesLimit     = 1000
	DefaultCandles     = 60
	MaxCandles         = 1000
	MaxQuoteSymbols    = 100
	// MaxCandleScan bounds how many trades one candles request reads.
	MaxCandleScan = 100_000
)

// Symbol is one instrument (GET /v1/symbols).
type Symbol struct {
	Symbol   string `json:"symbol"`
	Name     string `json:"name"`
	RefPrice string `json:"ref_price"`
	Tick     string `json:"tick"`
	Lot      int64  `json:"lot"`
}

// SymbolList is GET /v1/symbols.
type SymbolList struct {
	Symbols      []Symbol    `json:"symbols"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// SharesRequest is POST /v1/account/deposit-shares and withdraw-shares.
type SharesRequest struct {
	Symbol         string `json:"symbol"`
	Quantity       int64  `json:"quantity"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Position is a holding in one symbol after a share deposit or withdrawal.
type Position struct {
	Symbol            string `json:"symbol"`
	Quantity          int64  `json:"quantity"`
	AvailableQuantity int64  `json:"available_quantity"`
	AvgCost           string `json:"avg_cost"`
	AppliedIndex      uint64 `json:"applied_index,omitempty"`
	Replayed          bool   `json:"replayed,omitempty"`
}

// OrderRequest is POST /v1/orders. Type may be left empty: it is then
// inferred from the prices given (none: market, limit_price: limit,
// stop_price: stop, both: stop_limit). TIF defaults to gtc for limit and
// stop_limit orders and to ioc for market and stop orders.
type OrderRequest struct {
	ClientID   string `json:"client_id"`
	Symbol     string `json:"symbol"`
	Side       string `json:"side"`
	Type       string `json:"type,omitempty"`
	TIF        string `json:"tif,omitempty"`
	Quantity   int64  `json:"quantity"`
	LimitPrice string `json:"limit_price,omitempty"`
	StopPrice  string `json:"stop_price,omitempty"`
	PostOnly   bool   `json:"post_only,omitempty"`
}

// AmendRequest is PATCH /v1/orders/{id}: a new total quantity (filled
// shares included) and/or a new limit price; an absent field is kept.
type AmendRequest struct {
	Quantity   *int64 `json:"quantity,omitempty"`
	LimitPrice string `json:"limit_price,omitempty"`
}

// Order is an order as the API shows it.
type Order struct {
	OrderID           uint64 `json:"order_id"`
	ClientID          string `json:"client_id"`
	Symbol            string `json:"symbol"`
	Side              string `json:"side"`
	Type              string `json:"type"`
	TIF               string `json:"tif"`
	Quantity          int64  `json:"quantity"`
	FilledQuantity    int64  `json:"filled_quantity"`
	RemainingQuantity int64  `json:"remaining_quantity"` // still able to trade; 0 once the order is done
	LimitPrice        string `json:"limit_price"`
	StopPrice         string `json:"stop_price"`
	AvgFillPrice      string `json:"avg_fill_price"`
	Status            string `json:"status"`
	Reason            string `json:"reason"`
	RejectCode        string `json:"reject_code,omitempty"`
	PostOnly          bool   `json:"post_only"`
	Triggered         bool   `json:"triggered"`
	CreatedAt         string `json:"created_at"`
	UpdatedAt         string `json:"updated_at"`
	ExpiresAt         string `json:"expires_at"`
	Replayed          bool   `json:"replayed"`
	AppliedIndex      uint64 `json:"applied_index,omitempty"`
}

// Active reports whether the order can still trade.
func (o *Order) Active() bool {
	return o.Status == StatusOpen || o.Status == StatusPartiallyFilled
}

// OrderErrorBody is the body of a rejected order placement: the error and
// the order as stored (status rejected), so the caller learns its ID.
type OrderErrorBody struct {
	Error APIError `json:"error"`
	Order *Order   `json:"order,omitempty"`
}

// OrderList is GET /v1/orders.
type OrderList struct {
	Orders       []Order     `json:"orders"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// Fill is one execution of one of the trader's orders. Amount is the
// notional (price × quantity), always positive; Side says which way the
// cash moved.
type Fill struct {
	TradeSeq uint64 `json:"trade_seq"`
	OrderID  uint64 `json:"order_id"`
	Symbol   string `json:"symbol"`
	Side     string `json:"side"`
	Quantity int64  `json:"quantity"`
	Price    string `json:"price"`
	Amount   string `json:"amount"`
	Time     string `json:"time"`
}

// FillList is GET /v1/fills, newest first.
type FillList struct {
	Fills        []Fill      `json:"fills"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// ActivityEntry is one line of the account statement. Quantity and Amount
// are signed movements (shares and cash); the balances are after it.
type ActivityEntry struct {
	Seq          uint64 `json:"seq"`
	Time         string `json:"time"`
	Kind         string `json:"kind"` // deposit, withdrawal, share_deposit, share_withdrawal, buy, sell
	Symbol       string `json:"symbol"`
	Quantity     int64  `json:"quantity"`
	Price        string `json:"price"`
	Amount       string `json:"amount"`
	CashBalance  string `json:"cash_balance"`
	ShareBalance int64  `json:"share_balance"`
	OrderID      uint64 `json:"order_id"`
	TradeSeq     uint64 `json:"trade_seq"`
}

// Activity is GET /v1/activity: statement entries after a sequence, oldest
// first. NextAfter is the sequence to ask for the next page with; More
// says whether the page was full.
type Activity struct {
	Entries      []ActivityEntry `json:"entries"`
	NextAfter    uint64          `json:"next_after"`
	More         bool            `json:"more"`
	Cash         string          `json:"cash"`
	Consistency  Consistency     `json:"consistency"`
	AppliedIndex uint64          `json:"applied_index"`
}

// PortfolioPosition is one holding valued at the last price.
type PortfolioPosition struct {
	Symbol            string `json:"symbol"`
	Quantity          int64  `json:"quantity"`
	AvailableQuantity int64  `json:"available_quantity"`
	AvgCost           string `json:"avg_cost"`
	CostBasis         string `json:"cost_basis"`
	LastPrice         string `json:"last_price"`
	MarketValue       string `json:"market_value"`
	UnrealizedPnL     string `json:"unrealized_pnl"`
	RealizedPnL       string `json:"realized_pnl"`
}

// Portfolio is GET /v1/portfolio.
type Portfolio struct {
	Cash          string              `json:"cash"`
	AvailableCash string              `json:"available_cash"`
	Positions     []PortfolioPosition `json:"positions"`
	RealizedPnL   string              `json:"realized_pnl"`
	UnrealizedPnL string              `json:"unrealized_pnl"`
	MarketValue   string              `json:"market_value"`
	Equity        string              `json:"equity"`
	Consistency   Consistency         `json:"consistency"`
	AppliedIndex  uint64              `json:"applied_index"`
}

// Quote is GET /v1/market/{symbol}/quote. Day figures (open, high, low,
// volume) cover the current UTC day.
type Quote struct {
	Symbol       string      `json:"symbol"`
	Bid          string      `json:"bid"`
	BidSize      int64       `json:"bid_size"`
	Ask          string      `json:"ask"`
	AskSize      int64       `json:"ask_size"`
	Last         string      `json:"last"`
	Change       string      `json:"change"`     // last - ref_price
	ChangePct    string      `json:"change_pct"` // percent, 2 decimals
	Volume       int64       `json:"volume"`
	Open         string      `json:"open"`
	High         string      `json:"high"`
	Low          string      `json:"low"`
	Time         string      `json:"time"` // of the last trade
	RefPrice     string      `json:"ref_price"`
	TradeSeq     uint64      `json:"trade_seq"`
	Stale        bool        `json:"stale"` // no Market Engine tick for several intervals
	Consistency  Consistency `json:"consistency,omitempty"`
	AppliedIndex uint64      `json:"applied_index,omitempty"`
}

// QuoteList is GET /v1/quotes.
type QuoteList struct {
	Quotes       []Quote     `json:"quotes"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// BookLevel is one aggregated price level.
type BookLevel struct {
	Price    string `json:"price"`
	Quantity int64  `json:"quantity"`
	Orders   int    `json:"orders"`
}

// Book is GET /v1/market/{symbol}/book: levels best first.
type Book struct {
	Symbol       string      `json:"symbol"`
	Bids         []BookLevel `json:"bids"`
	Asks         []BookLevel `json:"asks"`
	Last         string      `json:"last"`
	RefPrice     string      `json:"ref_price"`
	TradeSeq     uint64      `json:"trade_seq"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// TapeTrade is one trade on the tape.
type TapeTrade struct {
	Seq       uint64 `json:"seq"`
	Time      string `json:"time"`
	Price     string `json:"price"`
	Quantity  int64  `json:"quantity"`
	TakerSide string `json:"taker_side"`
}

// Tape is GET /v1/market/{symbol}/trades, newest first.
type Tape struct {
	Symbol       string      `json:"symbol"`
	Trades       []TapeTrade `json:"trades"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}

// Candle is one interval's OHLCV, from the trades in it.
type Candle struct {
	Start  string `json:"start"`
	Open   string `json:"open"`
	High   string `json:"high"`
	Low    string `json:"low"`
	Close  string `json:"close"`
	Volume int64  `json:"volume"`
	Trades int    `json:"trades"`
}

// Candles is GET /v1/market/{symbol}/candles: the newest intervals that
// had trades, oldest first.
type Candles struct {
	Symbol       string      `json:"symbol"`
	Interval     string      `json:"interval"`
	Candles      []Candle    `json:"candles"`
	Consistency  Consistency `json:"consistency"`
	AppliedIndex uint64      `json:"applied_index"`
}
