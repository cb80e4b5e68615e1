package trader

import (
	"errors"
	"fmt"
)

// ErrInsufficientShares reports a sale or withdrawal of more shares than are
// available.
var ErrInsufficientShares = errors.New("insufficient shares")

// MaxShares bounds any holding so share sums never overflow.
const MaxShares = 1_000_000_000

// Position is an account's holding in one symbol.
type Position struct {
	Symbol   string
	Qty      int64 // shares held
	Reserved int64 // shares held back by open sell orders
	Cost     int64 // cost basis of Qty shares, in cents
	Realized int64 // realized profit and loss, in cents
}

// Available is the quantity that can be sold or withdrawn.
func (p Position) Available() int64 { return p.Qty - p.Reserved }

// AvgCost is the average cost per share in cents, rounded down.
func (p Position) AvgCost() int64 {
	if p.Qty == 0 {
		return 0
	}
	return p.Cost / p.Qty
}

// Add records q shares acquired at price (a buy, or a deposit at a
// reference price).
func (p *Position) Add(q, price int64) error {
	if q <= 0 {
		return fmt.Errorf("%w: quantity must be positive", ErrBadAmount)
	}
	if p.Qty+q > MaxShares {
		return fmt.Errorf("%w: holding would exceed %d shares", ErrOverflow, int64(MaxShares))
	}
	p.Qty += q
	p.Cost += q * price
	return nil
}

// Remove takes q shares out at price and returns the cost basis removed.
// With realize (a sale) the difference to the proceeds is realized P&L; a
// withdrawal realizes nothing. Reserved shares must be released first.
func (p *Position) Remove(q, price int64, realize bool) (int64, error) {
	if q <= 0 {
		return 0, fmt.Errorf("%w: quantity must be positive", ErrBadAmount)
	}
	if q > p.Qty {
		return 0, fmt.Errorf("%w: %d of %s held, %d asked", ErrInsufficientShares, p.Qty, p.Symbol, q)
	}
	removed := p.Cost
	if q != p.Qty {
		removed = p.Cost / p.Qty * q // integer cents; the last sale takes the remainder
	}
	p.Cost -= removed
	p.Qty -= q
	if realize {
		p.Realized += q*price - removed
	}
	return removed, nil
}

// Entry kinds of the account statement.
const (
	EntryDeposit         = "deposit"
	EntryWithdrawal      = "withdrawal"
	EntryShareDeposit    = "share_deposit"
	EntryShareWithdrawal = "share_withdrawal"
	EntryBuy             = "buy"
	EntrySell            = "sell"
)

// Entry is one line of an account statement: a movement of cash or shares.
type Entry struct {
	Seq         uint64 // per account, gap-free
	Time        int64
	Kind        string
	Symbol      string
	Qty         int64 // signed share movement
	Price       int64
	Cash        int64 // signed cash movement
	CashAfter   int64
	SharesAfter int64 // holding of Symbol after the movement
	OrderID     uint64
	TradeSeq    uint64
}
