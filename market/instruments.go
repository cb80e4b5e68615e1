package market

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hats-trading/hats/trader"
)

// Instrument is a tradable symbol. Prices tick in whole cents and trade in
// whole shares.
type Instrument struct {
	Symbol   string
	Name     string
	RefPrice int64 // cents
	Tick     int64 // cents; always 1
	Lot      int64 // shares; always 1
}

// DefaultUniverse is the instrument table a new cluster starts with when no
// --instruments file is given: well-known US equities with round reference
// prices (illustrative, not live quotes).
func DefaultUniverse() []Instrument {
	return []Instrument{
		{Symbol: "AAPL", Name: "Apple Inc.", RefPrice: 18910},
		{Symbol: "AMZN", Name: "Amazon.com, Inc.", RefPrice: 18650},
		{Symbol: "GOOGL", Name: "Alphabet Inc. Class A", RefPrice: 17130},
		{Symbol: "JNJ", Name: "Johnson & Johnson", RefPrice: 15280},
		{Symbol: "JPM", Name: "JPMorgan Chase & Co.", RefPrice: 20170},
		{Symbol: "META", Name: "Meta Platforms, Inc.", RefPrice: 50560},
		{Symbol: "MSFT", Name: "Microsoft Corporation", RefPrice: 41520},
		{Symbol: "NVDA", Name: "NVIDIA Corporation", RefPrice: 12140},
		{Symbol: "TSLA", Name: "Tesla, Inc.", RefPrice: 24890},
		{Symbol: "V", Name: "Visa Inc.", RefPrice: 27630},
	}
}

// ParseInstrumentsCSV reads `symbol,name,ref_price` rows (an optional
// header row starting with "symbol" is skipped). Prices are decimals with
// at most two places. Errors name the line and field.
func ParseInstrumentsCSV(r io.Reader) ([]Instrument, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	cr.TrimLeadingSpace = true
	var out []Instrument
	seen := map[string]bool{}
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadInstrument, err)
		}
		if line == 1 && strings.EqualFold(rec[0], "symbol") {
			continue
		}
		sym := strings.ToUpper(strings.TrimSpace(rec[0]))
		if sym == "" {
			return nil, fmt.Errorf("%w: line %d: empty symbol", ErrBadInstrument, line)
		}
		if seen[sym] {
			return nil, fmt.Errorf("%w: line %d: symbol %s listed twice", ErrBadInstrument, line, sym)
		}
		seen[sym] = true
		price, err := ParsePrice(strings.TrimSpace(rec[2]))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: ref_price: %v", ErrBadInstrument, line, err)
		}
		out = append(out, Instrument{Symbol: sym, Name: strings.TrimSpace(rec[1]), RefPrice: price, Tick: 1, Lot: 1})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no instruments in file", ErrBadInstrument)
	}
	return out, nil
}

// ParsePrice parses a positive decimal price with at most two places into
// cents: "150.25" → 15025. A third decimal place is off the 0.01 tick.
func ParsePrice(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || !digits(whole) || !digits(frac) || (strings.Contains(s, ".") && frac == "") {
		return 0, fmt.Errorf("%w: %q is not a price like 150.25", ErrBadPrice, s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("%w: %q is off the 0.01 tick", ErrBadPrice, s)
	}
	if len(whole) > 9 {
		return 0, fmt.Errorf("%w: %q is too large", ErrBadPrice, s)
	}
	w, _ := strconv.ParseInt(whole, 10, 64)
	for len(frac) < 2 {
		frac += "0"
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	p := w*100 + f
	if p <= 0 || p > MaxPrice {
		return 0, fmt.Errorf("%w: %q must be between 0.01 and %d.%02d", ErrBadPrice, s, MaxPrice/100, MaxPrice%100)
	}
	return p, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatPrice formats cents as "150.25", as money is formatted.
func FormatPrice(c int64) string { return trader.Cents(c).String() }
