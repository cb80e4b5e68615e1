// Package market owns the exchange's domain: instruments, orders and the
// price-time priority order book with its matching rules. It is pure domain
// code: no Raft, no HTTP, no clock (callers pass the leader-stamped time)
// and no randomness, so the state machine can replay it deterministically.
package market

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the market domain.
var (
	ErrUnknownSymbol = errors.New("unknown symbol")
	ErrBadQuantity   = errors.New("bad quantity")
	ErrBadPrice      = errors.New("bad price")
	ErrBadOrder      = errors.New("bad order")
	ErrWouldTake     = errors.New("post-only order would take liquidity")
	ErrCannotFill    = errors.New("fill-or-kill order cannot be filled in full")
	ErrBeyondCollar  = errors.New("price beyond the protective collar")
	ErrUnknownOrder  = errors.New("unknown order")
	ErrOrderDone     = errors.New("order is no longer open")
	ErrBadInstrument = errors.New("bad instrument")
)

// Limits on order entry.
const (
	MaxQuantity   = 1_000_000   // shares per order
	MaxPrice      = 100_000_000 // cents: $1,000,000.00
	CollarBps     = 1000        // market orders trade at most 10% from the reference
	MaxStopsFired = 10_000      // bound on stop cascades within one command
	maxNotional   = MaxQuantity * MaxPrice
)

var _ = maxNotional

// Side of an order.
type Side uint8

// Sides.
const (
	Buy  Side = 1
	Sell Side = 2
)

func (s Side) String() string {
	switch s {
	case Buy:
		return "buy"
	case Sell:
		return "sell"
	}
	return fmt.Sprintf("side(%d)", uint8(s))
}

// Opposite returns the other side.
func (s Side) Opposite() Side { return 3 - s }

// Type of an order.
type Type uint8

// Order types.
const (
	Market    Type = 1
	Limit     Type = 2
	Stop      Type = 3 // becomes a market order when triggered
	StopLimit Type = 4 // becomes a limit order when triggered
)

func (t Type) String() string {
	switch t {
	case Market:
		return "market"
	case Limit:
		return "limit"
	case Stop:
		return "stop"
	case StopLimit:
		return "stop_limit"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// TIF is an order's time in force.
type TIF uint8

// Times in force.
const (
	GTC TIF = 1
	DAY TIF = 2 // expires at the end of the UTC day it was entered
	IOC TIF = 3
	FOK TIF = 4
)

func (t TIF) String() string {
	switch t {
	case GTC:
		return "gtc"
	case DAY:
		return "day"
	case IOC:
		return "ioc"
	case FOK:
		return "fok"
	}
	return fmt.Sprintf("tif(%d)", uint8(t))
}

// ParseTIF parses gtc|day|ioc|fok.
func ParseTIF(s string) (TIF, error) {
	switch strings.ToLower(s) {
	case "", "gtc":
		return GTC, nil
	case "day":
		return DAY, nil
	case "ioc":
		return IOC, nil
	case "fok":
		return FOK, nil
	}
	return 0, fmt.Errorf("%w: tif must be gtc, day, ioc or fok, got %q", ErrBadOrder, s)
}

// ParseSide parses buy|sell.
func ParseSide(s string) (Side, error) {
	switch strings.ToLower(s) {
	case "buy":
		return Buy, nil
	case "sell":
		return Sell, nil
	}
	return 0, fmt.Errorf("%w: side must be buy or sell, got %q", ErrBadOrder, s)
}

// Status of an order.
type Status uint8

// Order statuses.
const (
	Open            Status = 1 // resting, or a stop waiting for its trigger
	PartiallyFilled Status = 2
	Filled          Status = 3
	Cancelled       Status = 4
	Expired         Status = 5
	Rejected        Status = 6
)

func (s Status) String() string {
	switch s {
	case Open:
		return "open"
	case PartiallyFilled:
		return "partially_filled"
	case Filled:
		return "filled"
	case Cancelled:
		return "cancelled"
	case Expired:
		return "expired"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Active reports whether the order can still trade.
func (s Status) Active() bool { return s == Open || s == PartiallyFilled }

// Order is one order. Prices are cents; quantities are shares.
type Order struct {
	ID       uint64
	ClientID string
	Account  uint64
	Symbol   string
	Side     Side
	Type     Type
	TIF      TIF
	PostOnly bool

	Qty    int64
	Filled int64
	Limit  int64 // limit price (Limit, StopLimit)
	Stop   int64 // trigger price (Stop, StopLimit)
	Cap    int64 // worst price a Market/Stop order may trade at (the collar), set at entry

	Status     Status
	Reason     string
	RejectCode string // stable code of a rejection, for replays
	Triggered  bool   // stop orders: trigger reached
	Created    int64  // leader-stamped unix nanoseconds
	Updated    int64
	ExpiresAt  int64  // DAY orders; 0 otherwise
	Seq        uint64 // time priority; larger is later

	Notional int64 // sum of price*qty over fills, for the average price

	// book bookkeeping (not persisted)
	level *level
}

// Remaining is the quantity still open.
func (o *Order) Remaining() int64 { return o.Qty - o.Filled }

// ReservePrice is the per-share cash a buy order holds back: its limit, or
// its collar cap when it has no limit.
func (o *Order) ReservePrice() int64 {
	if o.Type == Limit || o.Type == StopLimit {
		return o.Limit
	}
	return o.Cap
}

// PriceBound is the worst price the order accepts when it takes.
func (o *Order) PriceBound() int64 { return o.ReservePrice() }

// AvgFillPrice is the average fill price in cents, rounded down; 0 if none.
func (o *Order) AvgFillPrice() int64 {
	if o.Filled == 0 {
		return 0
	}
	return o.Notional / o.Filled
}

// Fill is one trade between a resting maker and an incoming taker.
type Fill struct {
	Maker *Order
	Taker *Order
	Price int64
	Qty   int64
}

// Buyer returns the buy side's order.
func (f Fill) Buyer() *Order {
	if f.Taker.Side == Buy {
		return f.Taker
	}
	return f.Maker
}

// Seller returns the sell side's order.
func (f Fill) Seller() *Order {
	if f.Taker.Side == Sell {
		return f.Taker
	}
	return f.Maker
}

// CollarBounds returns the lowest and highest prices a market order may
// trade at around ref.
func CollarBounds(ref int64) (low, high int64) {
	d := ref * CollarBps / 10_000
	low = ref - d
	if low < 1 {
		low = 1
	}
	return low, ref + d
}

// EndOfUTCDay returns the first instant (unix ns) of the UTC day after t.
func EndOfUTCDay(t int64) int64 {
	const day = 86_400 * 1_000_000_000
	return (t/day + 1) * day
}
