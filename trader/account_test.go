package trader_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hats-trading/hats/trader"
)

func TestAvailable(t *testing.T) {
	a := trader.Account{Cash: 10000, Reserved: 2500}
	if got := a.Available(); got != 7500 {
		t.Fatalf("Available() = %s, want 75.00", got)
	}
}

func TestDeposit(t *testing.T) {
	tests := []struct {
		name     string
		cash     trader.Cents
		amount   trader.Cents
		wantCash trader.Cents
		wantErr  error
	}{
		{"ok", 100, 50, 150, nil},
		{"from zero", 0, 1, 1, nil},
		{"max amount", 0, trader.MaxAmount, trader.MaxAmount, nil},
		{"up to max balance", trader.MaxBalance - 5, 5, trader.MaxBalance, nil},
		{"zero", 100, 0, 100, trader.ErrBadAmount},
		{"negative", 100, -5, 100, trader.ErrBadAmount},
		{"over max amount", 100, trader.MaxAmount + 1, 100, trader.ErrBadAmount},
		{"overflow", trader.MaxBalance - 5, 6, trader.MaxBalance - 5, trader.ErrOverflow},
		{"overflow at max", trader.MaxBalance, 1, trader.MaxBalance, trader.ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := trader.Account{ID: 7, Username: "ann", Cash: tt.cash, Reserved: 3}
			before := orig
			got, err := orig.Deposit(tt.amount)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Deposit(%s): unexpected error %v", tt.amount, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Deposit(%s) error = %v, want %v", tt.amount, err, tt.wantErr)
			}
			if got.Cash != tt.wantCash {
				t.Errorf("Cash = %s, want %s", got.Cash, tt.wantCash)
			}
			if got.Reserved != 3 || got.ID != 7 || got.Username != "ann" {
				t.Errorf("Deposit changed other fields: %+v", got)
			}
			if orig != before {
				t.Errorf("Deposit mutated its receiver: %+v", orig)
			}
		})
	}
}

func TestWithdraw(t *testing.T) {
	tests := []struct {
		name     string
		cash     trader.Cents
		reserved trader.Cents
		amount   trader.Cents
		wantCash trader.Cents
		wantErr  error
	}{
		{"ok", 100, 0, 40, 60, nil},
		{"everything", 100, 0, 100, 0, nil},
		{"all available", 100, 60, 40, 60, nil},
		{"more than cash", 100, 0, 101, 100, trader.ErrInsufficientFunds},
		{"reserved is not available", 100, 60, 41, 100, trader.ErrInsufficientFunds},
		{"fully reserved", 100, 100, 1, 100, trader.ErrInsufficientFunds},
		{"empty account", 0, 0, 1, 0, trader.ErrInsufficientFunds},
		{"zero", 100, 0, 0, 100, trader.ErrBadAmount},
		{"negative", 100, 0, -1, 100, trader.ErrBadAmount},
		{"over max amount", trader.MaxBalance, 0, trader.MaxAmount + 1, trader.MaxBalance, trader.ErrBadAmount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := trader.Account{ID: 7, Cash: tt.cash, Reserved: tt.reserved}
			before := orig
			got, err := orig.Withdraw(tt.amount)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Withdraw(%s): unexpected error %v", tt.amount, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Withdraw(%s) error = %v, want %v", tt.amount, err, tt.wantErr)
			}
			if got.Cash != tt.wantCash {
				t.Errorf("Cash = %s, want %s", got.Cash, tt.wantCash)
			}
			if got.Reserved != tt.reserved {
				t.Errorf("Reserved = %s, want %s", got.Reserved, tt.reserved)
			}
			if got.Available() < 0 {
				t.Errorf("Available went negative: %s", got.Available())
			}
			if orig != before {
				t.Errorf("Withdraw mutated its receiver: %+v", orig)
			}
		})
	}
}

func TestValidateUsername(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"ann", true},
		{"Ann", true},
		{"123", true},
		{"a.b_c-d", true},
		{"ann.lee-2_x", true},
		{strings.Repeat("a", 32), true},
		{"", false},
		{"ab", false},
		{strings.Repeat("a", 33), false},
		{".ann", false},
		{"_ann", false},
		{"-ann", false},
		{"an n", false},
		{"ann!", false},
		{"ann@x", false},
		{"ann/..", false},
		{"jürgen", false},     // non-ASCII letter
		{"ann٣", false},       // non-ASCII digit
		{"\xff\xfeab", false}, // invalid UTF-8
		{"ann\x00", false},
	}
	for _, tt := range tests {
		err := trader.ValidateUsername(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateUsername(%q): unexpected error %v", tt.in, err)
		}
		if !tt.ok && !errors.Is(err, trader.ErrBadUsername) {
			t.Errorf("ValidateUsername(%q) = %v, want ErrBadUsername", tt.in, err)
		}
	}
}

func TestValidatePassword(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{strings.Repeat("x", trader.MinPasswordLen), true},
		{"correct horse battery staple", true},
		{strings.Repeat("x", trader.MaxPasswordLen), true},
		{"", false},
		{strings.Repeat("x", trader.MinPasswordLen-1), false},
		{strings.Repeat("x", trader.MaxPasswordLen+1), false},
		{strings.Repeat("é", 37), false}, // 74 bytes: the limit is bytes, not runes
	}
	for _, tt := range tests {
		err := trader.ValidatePassword(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidatePassword(len %d): unexpected error %v", len(tt.in), err)
		}
		if !tt.ok && !errors.Is(err, trader.ErrBadPassword) {
			t.Errorf("ValidatePassword(len %d) = %v, want ErrBadPassword", len(tt.in), err)
		}
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"", true},
		{"Ann Lee", true},
		{"Zoë O'Brien-Łukasz", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"Ann\nLee", false},
		{"Ann\tLee", false},
		{"Ann\x00", false},
		{"Ann\x7f", false},
		{"Ann\u0085", false}, // C1 control
		{"\xff", false},      // invalid UTF-8
	}
	for _, tt := range tests {
		err := trader.ValidateName(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateName(%q): unexpected error %v", tt.in, err)
		}
		if !tt.ok && !errors.Is(err, trader.ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", tt.in, err)
		}
	}
}

func TestValidateEmail(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62) + ".com"
	tests := []struct {
		in string
		ok bool
	}{
		{"", true},
		{"ann@example.com", true},
		{"ann.lee+hats@mail.example.org", true},
		{"ann", false},
		{"ann@", false},
		{"@example.com", false},
		{"Ann <ann@example.com>", false},
		{"<ann@example.com>", false},
		{" ann@example.com", false},
		{"ann@example.com ", false},
		{"ann@example.com, bob@example.com", false},
		{long, false},
	}
	if len(long) <= 254 {
		t.Fatalf("test setup: long address is only %d bytes", len(long))
	}
	for _, tt := range tests {
		err := trader.ValidateEmail(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateEmail(%q): unexpected error %v", tt.in, err)
		}
		if !tt.ok && !errors.Is(err, trader.ErrBadEmail) {
			t.Errorf("ValidateEmail(%q) = %v, want ErrBadEmail", tt.in, err)
		}
	}
}
