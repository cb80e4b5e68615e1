package trader

import (
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Account is a trader's cash account and personal information, as stored in
// the trader database.
type Account struct {
	ID        uint64
	Username  string
	Name      string
	Email     string
	Cash      Cents // total cash held
	Reserved  Cents // cash held back by open buy orders
	CreatedAt int64 // leader-stamped, unix nanoseconds
}

// Available is the cash that can be withdrawn or committed to new orders.
func (a Account) Available() Cents { return a.Cash - a.Reserved }

// Deposit returns the account with amount added.
func (a Account) Deposit(amount Cents) (Account, error) {
	if err := ValidateAmount(amount); err != nil {
		return a, err
	}
	if a.Cash+amount > MaxBalance {
		return a, fmt.Errorf("%w: cash would exceed %s", ErrOverflow, MaxBalance)
	}
	a.Cash += amount
	return a, nil
}

// Withdraw returns the account with amount removed; it never lets available
// cash go negative.
func (a Account) Withdraw(amount Cents) (Account, error) {
	if err := ValidateAmount(amount); err != nil {
		return a, err
	}
	if amount > a.Available() {
		return a, fmt.Errorf("%w: withdraw %s but only %s available", ErrInsufficientFunds, amount, a.Available())
	}
	a.Cash -= amount
	return a, nil
}

// Password length limits. bcrypt only uses the first 72 bytes.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 72
)

// ValidateUsername accepts 3 to 32 characters of letters, digits, '.', '_'
// and '-', starting with a letter or digit. Usernames are case-sensitive.
func ValidateUsername(u string) error {
	if len(u) < 3 || len(u) > 32 {
		return fmt.Errorf("%w: username must be 3 to 32 characters", ErrBadUsername)
	}
	for i, r := range u {
		ok := r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || (i > 0 && strings.ContainsRune("._-", r)))
		if !ok {
			return fmt.Errorf("%w: username %q may only hold letters, digits, '.', '_' and '-'", ErrBadUsername, u)
		}
	}
	return nil
}

// ValidatePassword enforces the password policy.
func ValidatePassword(p string) error {
	if len(p) < MinPasswordLen {
		return fmt.Errorf("%w: password must be at least %d characters", ErrBadPassword, MinPasswordLen)
	}
	if len(p) > MaxPasswordLen {
		return fmt.Errorf("%w: password must be at most %d bytes", ErrBadPassword, MaxPasswordLen)
	}
	return nil
}

// ValidateName checks a full name (may be empty).
func ValidateName(n string) error {
	if len(n) > 128 || !utf8.ValidString(n) {
		return fmt.Errorf("%w: name must be valid text of at most 128 bytes", ErrBadName)
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: name must not contain control characters", ErrBadName)
		}
	}
	return nil
}

// ValidateEmail checks an email address (may be empty).
func ValidateEmail(e string) error {
	if e == "" {
		return nil
	}
	if len(e) > 254 {
		return fmt.Errorf("%w: email is longer than 254 bytes", ErrBadEmail)
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return fmt.Errorf("%w: %q is not an address like ann@example.com", ErrBadEmail, e)
	}
	return nil
}
