package market

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkMatch measures the in-memory matching engine alone: Validate,
// Prepare and Submit (or Cancel) per command on one book, single-threaded.
// The mix is a realistic continuous-trading flow around a mid price:
//
//	55% passive limit orders 1..20 ticks from the mid (they rest)
//	15% aggressive limit orders up to 3 ticks through the mid (they trade)
//	 5% market orders (IOC)
//	25% cancels of a random order that rested and is still open
//
// and a cancel instead of a new order whenever the book holds more than
// 5,000 orders, so the book stays at a steady size (in steady state about
// 38% of commands are cancels). A cancel looks the order up first, as the
// state machine does; "idle/order" counts cancels that found nothing to
// cancel. Each b.N iteration is one command, and orders/s counts every
// command (new orders and cancels). One command in 16 is also timed on its
// own for the latency percentiles; 64 accounts trade, so self-trade
// prevention fires now and then.
func BenchmarkMatch(b *testing.B) {
	const (
		mid      = int64(10_000)
		maxBook  = 5_000
		sampleEv = 16
	)
	book := NewBook("BENCH", mid)
	rng := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 { // xorshift64*: cheap and deterministic
		rng ^= rng >> 12
		rng ^= rng << 25
		rng ^= rng >> 27
		return rng * 2685821657736338717
	}
	open := make([]uint64, 0, 2*maxBook) // IDs of orders that rested (some filled since)
	var id uint64
	var trades, rejects, cancels, missed int
	samples := make([]time.Duration, 0, b.N/sampleEv+1)
	now := tNow

	step := func() {
		r := next()
		kind := r % 100
		if kind >= 75 || len(book.resting) > maxBook {
			for len(open) > 0 {
				i := int((r >> 8) % uint64(len(open)))
				oid := open[i]
				open[i] = open[len(open)-1]
				open = open[:len(open)-1]
				if _, ok := book.Order(oid); ok {
					if _, err := book.Cancel(oid, now, "bench"); err != nil {
						b.Fatal(err)
					}
					cancels++
					return
				}
				r = next() // filled meanwhile: drop it and pick another
			}
			missed++
			return
		}
		id++
		o := &Order{ID: id, Account: 1 + (r>>8)%64, Symbol: "BENCH", Qty: int64(1 + (r>>16)%100), TIF: GTC}
		o.Side = Side(1 + (r>>24)%2)
		ticks := int64((r >> 32) % 20)
		sign := int64(1)
		if o.Side == Buy {
			sign = -1
		}
		switch {
		case kind < 55: // passive
			o.Type, o.Limit = Limit, mid+sign*(1+ticks)
		case kind < 70: // aggressive: through the mid
			o.Type, o.Limit = Limit, mid-sign*(ticks%4)
		default:
			o.Type, o.TIF = Market, IOC
		}
		if err := Validate(o); err != nil {
			b.Fatal(err)
		}
		if err := book.Prepare(o); err != nil {
			rejects++
			return
		}
		out, err := book.Submit(o, now)
		if err != nil {
			rejects++
			return
		}
		trades += len(out.Fills)
		if o.Status.Active() {
			open = append(open, id)
		}
	}

	// Warm up to a steady-state book before timing.
	for range 20_000 {
		step()
	}
	trades, rejects, cancels, missed = 0, 0, 0, 0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if i%sampleEv == 0 {
			t := time.Now()
			step()
			samples = append(samples, time.Since(t))
			continue
		}
		step()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if book.Crossed() {
		b.Fatal("book crossed")
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		if len(samples) == 0 {
			return 0
		}
		return float64(samples[min(len(samples)-1, int(float64(len(samples))*p))].Nanoseconds())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "orders/s")
	b.ReportMetric(pct(0.50), "p50-ns")
	b.ReportMetric(pct(0.99), "p99-ns")
	b.ReportMetric(pct(0.999), "p99.9-ns")
	b.ReportMetric(float64(trades)/float64(b.N), "trades/order")
	b.ReportMetric(float64(len(book.resting)), "resting")
	b.ReportMetric(float64(cancels)/float64(b.N), "cancels/order")
	b.ReportMetric(float64(missed)/float64(b.N), "idle/order")
	b.ReportMetric(float64(rejects)/float64(b.N), "rejects/order")
}
