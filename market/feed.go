package market

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// ErrBadFeed reports feed data that must not be committed.
var ErrBadFeed = errors.New("bad feed data")

// TickPrice is one symbol's new reference price in a tick.
type TickPrice struct {
	Symbol string
	Price  int64 // cents
}

// SimState is the replicated state of the simulated feed: the random
// generator's state. Prices live in the instrument table, so a new leader
// continues the same walk from the committed state with no jump.
type SimState struct {
	RNG uint64
}

// EncodeSimState and DecodeSimState are the sim feed's cursor format.
func EncodeSimState(s SimState) []byte { return binary.BigEndian.AppendUint64(nil, s.RNG) }

// DecodeSimState decodes EncodeSimState; empty input is a fresh walk seeded
// with seed.
func DecodeSimState(b []byte, seed uint64) (SimState, error) {
	if len(b) == 0 {
		return SimState{RNG: seed}, nil
	}
	if len(b) != 8 {
		return SimState{}, fmt.Errorf("%w: sim state is %d bytes", ErrBadFeed, len(b))
	}
	return SimState{RNG: binary.BigEndian.Uint64(b)}, nil
}

// splitmix64 is a small, well-distributed generator whose whole state is
// one word, so it replicates cheaply.
func (s *SimState) next() uint64 {
	s.RNG += 0x9e3779b97f4a7c15
	z := s.RNG
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *SimState) uniform() float64 { return (float64(s.next()>>11) + 0.5) / (1 << 53) }

// normal draws a standard normal variate (Box–Muller).
func (s *SimState) normal() float64 {
	u1, u2 := s.uniform(), s.uniform()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// Volatility is a symbol's per-tick volatility in the sim walk: between
// 5 and 25 basis points, fixed per symbol.
func Volatility(symbol string) float64 {
	var h uint64 = 1469598103934665603
	for i := 0; i < len(symbol); i++ {
		h = (h ^ uint64(symbol[i])) * 1099511628211
	}
	return 0.0005 + float64(h%2001)/2000*0.002
}

// SimStep advances the geometric random walk one tick from the given
// reference prices (in symbol order) and returns the new prices. It runs
// on the leader only, never inside Apply; the state machine receives its
// output as data.
func SimStep(st *SimState, refs []TickPrice) []TickPrice {
	out := make([]TickPrice, len(refs))
	for i, r := range refs {
		z := st.normal()
		p := int64(math.Round(float64(r.Price) * math.Exp(Volatility(r.Symbol)*z)))
		out[i] = TickPrice{Symbol: r.Symbol, Price: min(max(p, 1), MaxPrice)}
	}
	return out
}

// CheckBand rejects a price that is non-positive, too large, or further
// than bandPct percent from the previous reference price.
func CheckBand(prev, next int64, bandPct float64) error {
	if next <= 0 || next > MaxPrice {
		return fmt.Errorf("%w: price %s out of range", ErrBadFeed, FormatPrice(next))
	}
	if prev > 0 && bandPct > 0 {
		if jump := math.Abs(float64(next-prev)) / float64(prev) * 100; jump > bandPct {
			return fmt.Errorf("%w: price %s is %.1f%% from %s (band %.1f%%)", ErrBadFeed, FormatPrice(next), jump, FormatPrice(prev), bandPct)
		}
	}
	return nil
}

// ParseFeed parses a downloaded quote payload: a JSON array
// [{"symbol":"AAPL","price":"189.10"}] (price as a string or number), or
// CSV rows "symbol,price[,volume]" with an optional header. Rows that do
// not parse are returned as errors alongside the good ones; the caller
// counts them. The result is sorted by symbol, last row per symbol wins.
func ParseFeed(data []byte) ([]TickPrice, []error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return parseFeedJSON(trimmed)
	}
	return parseFeedCSV(trimmed)
}

func parseFeedJSON(data []byte) ([]TickPrice, []error) {
	var rows []struct {
		Symbol string          `json:"symbol"`
		Price  json.RawMessage `json:"price"`
	}
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, []error{fmt.Errorf("%w: JSON: %v", ErrBadFeed, err)}
	}
	var out []TickPrice
	var errs []error
	for i, r := range rows {
		s := strings.Trim(string(r.Price), `"`)
		p, err := ParsePrice(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: row %d (%s): %v", ErrBadFeed, i+1, r.Symbol, err))
			continue
		}
		out = append(out, TickPrice{Symbol: strings.ToUpper(strings.TrimSpace(r.Symbol)), Price: p})
	}
	return dedupe(out), errs
}

func parseFeedCSV(data []byte) ([]TickPrice, []error) {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var out []TickPrice
	var errs []error
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: CSV line %d: %v", ErrBadFeed, line, err))
			break
		}
		if line == 1 && len(rec) > 0 && strings.EqualFold(rec[0], "symbol") {
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			errs = append(errs, fmt.Errorf("%w: CSV line %d: want symbol,price[,volume]", ErrBadFeed, line))
			continue
		}
		p, err := ParsePrice(strings.TrimSpace(rec[1]))
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: CSV line %d: %v", ErrBadFeed, line, err))
			continue
		}
		out = append(out, TickPrice{Symbol: strings.ToUpper(strings.TrimSpace(rec[0])), Price: p})
	}
	return dedupe(out), errs
}

func dedupe(in []TickPrice) []TickPrice {
	slices.SortStableFunc(in, func(a, b TickPrice) int { return strings.Compare(a.Symbol, b.Symbol) })
	var out []TickPrice
	for i, t := range in {
		if i+1 < len(in) && in[i+1].Symbol == t.Symbol {
			continue
		}
		out = append(out, t)
	}
	return out
}

// ReplayRow is one row of a historical price file: time,symbol,price.
type ReplayRow struct {
	Time   int64 // unix seconds
	Symbol string
	Price  int64
}

// ParseReplay parses a `time,symbol,price` CSV (time as RFC 3339 or unix
// seconds; optional header), in file order.
func ParseReplay(r io.Reader, parseTime func(string) (int64, error)) ([]ReplayRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 3
	cr.TrimLeadingSpace = true
	var out []ReplayRow
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadFeed, line, err)
		}
		if line == 1 && strings.EqualFold(rec[0], "time") {
			continue
		}
		t, err := parseTime(strings.TrimSpace(rec[0]))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: time: %v", ErrBadFeed, line, err)
		}
		p, err := ParsePrice(strings.TrimSpace(rec[2]))
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: price: %v", ErrBadFeed, line, err)
		}
		out = append(out, ReplayRow{Time: t, Symbol: strings.ToUpper(strings.TrimSpace(rec[1])), Price: p})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no rows", ErrBadFeed)
	}
	return out, nil
}

// MarketMakerQuotes returns the house bid and ask around ref for a spread
// in basis points; ok is false when the spread leaves no room.
func MarketMakerQuotes(ref int64, spreadBps int64) (bid, ask int64, ok bool) {
	half := ref * spreadBps / 20_000
	if half < 1 {
		half = 1
	}
	bid, ask = ref-half, ref+half
	if bid < 1 || ask > MaxPrice {
		return 0, 0, false
	}
	return bid, ask, true
}
