// Package trader owns the trader database's domain rules: money as integer
// cents, account balances, personal information and credential policy. It is
// pure domain code: no Raft, no HTTP, no clock and no randomness.
package trader

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors of the trader domain. Callers match them with errors.Is;
// messages wrap them with the offending field.
var (
	ErrBadAmount         = errors.New("bad amount")
	ErrInsufficientFunds = errors.New("insufficient funds")
	ErrBadUsername       = errors.New("bad username")
	ErrBadPassword       = errors.New("bad password")
	ErrBadName           = errors.New("bad name")
	ErrBadEmail          = errors.New("bad email")
	ErrOverflow          = errors.New("balance overflow")
)

// Cents is an amount of money in US cents. Money is never a float in HATS.
type Cents int64

// MaxAmount is the largest single deposit or withdrawal: 10 billion dollars.
const MaxAmount Cents = 1_000_000_000_000

// MaxBalance bounds any balance so sums of balances never overflow int64.
const MaxBalance Cents = 1_000_000_000_000_000

// ParseCents parses a decimal string with at most two fractional digits
// ("150", "150.5", "150.25") into exact cents. Signs, exponents, spaces,
// thousands separators and a third decimal place are rejected.
func ParseCents(s string) (Cents, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadAmount)
	}
	neg := false
	body := s
	if body[0] == '-' {
		neg = true
		body = body[1:]
	}
	whole, frac, hasDot := strings.Cut(body, ".")
	if whole == "" || (hasDot && frac == "") {
		return 0, fmt.Errorf("%w: %q is not a decimal like 150.25", ErrBadAmount, s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("%w: %q has more than 2 decimal places", ErrBadAmount, s)
	}
	if !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("%w: %q is not a decimal like 150.25", ErrBadAmount, s)
	}
	if len(whole) > 16 {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadAmount, s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %v", ErrBadAmount, s, err)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	c := Cents(w*100 + f)
	if neg {
		c = -c
	}
	return c, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats cents as a decimal with exactly two places: "150.25".
// It runs for every amount and price in every reply, so it formats into
// a stack buffer instead of going through fmt.
func (c Cents) String() string {
	var buf [24]byte // "-92233720368547758.08" is 21 bytes
	return string(c.AppendTo(buf[:0]))
}

// AppendTo appends c as String formats it.
func (c Cents) AppendTo(b []byte) []byte {
	u := uint64(c)
	if c < 0 {
		b = append(b, '-')
		u = -u // two's complement: exact even for math.MinInt64
	}
	b = strconv.AppendUint(b, u/100, 10)
	r := u % 100
	return append(b, '.', byte('0'+r/10), byte('0'+r%10))
}

// ValidateAmount checks a deposit or withdrawal amount.
func ValidateAmount(a Cents) error {
	if a <= 0 {
		return fmt.Errorf("%w: amount must be positive, got %s", ErrBadAmount, a)
	}
	if a > MaxAmount {
		return fmt.Errorf("%w: amount %s exceeds the maximum %s", ErrBadAmount, a, MaxAmount)
	}
	return nil
}
