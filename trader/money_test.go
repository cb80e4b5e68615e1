package trader_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/hats-trading/hats/trader"
)

func TestParseCentsValid(t *testing.T) {
	tests := []struct {
		in   string
		want trader.Cents
	}{
		{"0", 0},
		{"150", 15000},
		{"150.5", 15050},
		{"150.25", 15025},
		{"150.05", 15005},
		{"0.01", 1},
		{"0.10", 10},
		{"0.1", 10},
		{"-1.00", -100},
		{"-0.5", -50},
		{"007", 700},
		{"9999999999999999", 999_999_999_999_999_900},
		{"9999999999999999.99", 999_999_999_999_999_999},
	}
	for _, tt := range tests {
		got, err := trader.ParseCents(tt.in)
		if err != nil {
			t.Errorf("ParseCents(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseCents(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseCentsInvalid(t *testing.T) {
	tests := []string{
		"",
		"1.234",
		"0.001",
		"1e5",
		"1E5",
		" 1",
		"1 ",
		"1,000",
		"+1",
		".5",
		"5.",
		"-",
		"-.5",
		"--1",
		"1.-5",
		"1.2.3",
		"abc",
		"0x10",
		"½",
		"١",                    // Arabic-Indic digit one
		"99999999999999999",    // 17 integer digits: too large
		"-99999999999999999",   // too large negative
		"99999999999999999999", // would overflow int64
		"NaN",
		"Inf",
	}
	for _, in := range tests {
		got, err := trader.ParseCents(in)
		if err == nil {
			t.Errorf("ParseCents(%q) = %d, want error", in, got)
			continue
		}
		if !errors.Is(err, trader.ErrBadAmount) {
			t.Errorf("ParseCents(%q): error %v does not wrap ErrBadAmount", in, err)
		}
		if got != 0 {
			t.Errorf("ParseCents(%q) returned %d alongside an error, want 0", in, got)
		}
	}
}

func TestCentsString(t *testing.T) {
	tests := []struct {
		in   trader.Cents
		want string
	}{
		{0, "0.00"},
		{1, "0.01"},
		{10, "0.10"},
		{99, "0.99"},
		{100, "1.00"},
		{15025, "150.25"},
		{15050, "150.50"},
		{-1, "-0.01"},
		{-100, "-1.00"},
		{-15025, "-150.25"},
		{trader.MaxAmount, "10000000000.00"},
		{math.MaxInt64, "92233720368547758.07"},
		{math.MinInt64, "-92233720368547758.08"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Cents(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

func TestCentsStringRoundTrip(t *testing.T) {
	values := []trader.Cents{
		0, 1, -1, 9, 10, 11, 99, 100, 101, 15025, -15025, 123456789,
		trader.MaxAmount, -trader.MaxAmount, trader.MaxBalance, -trader.MaxBalance,
		999_999_999_999_999_999, -999_999_999_999_999_999,
	}
	// A deterministic sweep over many magnitudes.
	for v := trader.Cents(7); v < trader.MaxBalance; v = v*13 + 3 {
		values = append(values, v, -v)
	}
	for _, v := range values {
		s := v.String()
		got, err := trader.ParseCents(s)
		if err != nil {
			t.Errorf("ParseCents(%q) (from %d): %v", s, int64(v), err)
			continue
		}
		if got != v {
			t.Errorf("round trip %d -> %q -> %d", int64(v), s, int64(got))
		}
		if i := strings.IndexByte(s, '.'); i < 0 || len(s)-i-1 != 2 {
			t.Errorf("Cents(%d).String() = %q: want exactly two decimal places", int64(v), s)
		}
	}
}

func TestValidateAmount(t *testing.T) {
	tests := []struct {
		in trader.Cents
		ok bool
	}{
		{1, true},
		{15025, true},
		{trader.MaxAmount, true},
		{0, false},
		{-1, false},
		{-trader.MaxAmount, false},
		{trader.MaxAmount + 1, false},
		{math.MaxInt64, false},
		{math.MinInt64, false},
	}
	for _, tt := range tests {
		err := trader.ValidateAmount(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateAmount(%d): unexpected error %v", int64(tt.in), err)
		}
		if !tt.ok && !errors.Is(err, trader.ErrBadAmount) {
			t.Errorf("ValidateAmount(%d) = %v, want ErrBadAmount", int64(tt.in), err)
		}
	}
}

func FuzzParseCents(f *testing.F) {
	for _, s := range []string{"0", "150.25", "-1.00", "1.234", "9999999999999999.99", "", ".5", "1e5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := trader.ParseCents(s)
		if err != nil {
			if !errors.Is(err, trader.ErrBadAmount) {
				t.Fatalf("ParseCents(%q): error %v does not wrap ErrBadAmount", s, err)
			}
			return
		}
		// Whatever parses must format back to a value that parses to the same cents.
		back, err := trader.ParseCents(c.String())
		if err != nil || back != c {
			t.Fatalf("ParseCents(%q) = %d; String %q parses to %d, %v", s, int64(c), c.String(), int64(back), err)
		}
	})
}
