package market

import "testing"

// fuzzBook returns a book with resting orders on both sides, a waiting stop
// and a DAY order, after one trade (so the reference is the last price).
func fuzzBook(t *testing.T) (*Book, []*Order) {
	b := NewBook("FUZZ", tRef)
	var all []*Order
	id := uint64(0)
	add := func(o *Order) {
		id++
		o.ID = id
		if err := Validate(o); err != nil {
			t.Fatalf("fuzz book order: %v", err)
		}
		if err := b.Prepare(o); err != nil {
			t.Fatalf("fuzz book order: %v", err)
		}
		if _, err := b.Submit(o, tNow); err != nil {
			t.Fatalf("fuzz book order: %v", err)
		}
		all = append(all, o)
	}
	add(lim(alice, Sell, 10, 10_100))
	add(lim(bob, Sell, 5, 10_100))
	add(withTIF(lim(carol, Sell, 7, 10_300), DAY))
	add(lim(alice, Buy, 10, 9_900))
	add(lim(bob, Buy, 3, 9_800))
	add(stop(carol, Buy, 4, 10_200))
	add(stopLim(alice, Sell, 4, 9_850, 9_800))
	add(lim(4, Buy, 1, 10_100)) // a trade: last 10100
	return b, all
}

func FuzzValidate(f *testing.F) {
	f.Add(uint8(1), uint8(2), uint8(1), false, int64(5), int64(10_000), int64(0), uint8(1), int64(0))
	f.Add(uint8(2), uint8(1), uint8(3), false, int64(50), int64(0), int64(0), uint8(2), int64(0))
	f.Add(uint8(1), uint8(1), uint8(4), false, int64(20), int64(0), int64(0), uint8(1), int64(0))
	f.Add(uint8(1), uint8(3), uint8(1), false, int64(5), int64(0), int64(10_150), uint8(1), int64(0))
	f.Add(uint8(2), uint8(4), uint8(2), true, int64(5), int64(9_800), int64(9_900), uint8(2), int64(1))
	f.Add(uint8(1), uint8(2), uint8(2), true, int64(5), int64(10_099), int64(0), uint8(3), int64(2))
	f.Add(uint8(2), uint8(2), uint8(4), false, int64(1_000_000), int64(1), int64(0), uint8(4), int64(0))
	f.Add(uint8(0), uint8(9), uint8(9), true, int64(-1), int64(-1), int64(-1), uint8(1), int64(-1))
	f.Add(uint8(1), uint8(2), uint8(1), false, int64(1<<62), int64(1<<62), int64(1<<62), uint8(1), int64(1<<62))
	f.Add(uint8(3), uint8(0), uint8(0), false, int64(0), int64(0), int64(0), uint8(0), int64(0))
	f.Fuzz(func(t *testing.T, side, typ, tif uint8, postOnly bool, qty, limit, stopPx int64, acct uint8, amend int64) {
		o := &Order{
			ID: 1000, Account: uint64(acct%5) + 1, Symbol: "FUZZ",
			Side: Side(side), Type: Type(typ), TIF: TIF(tif), PostOnly: postOnly,
			Qty: qty, Limit: limit, Stop: stopPx,
		}
		err := Validate(o)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty validation error")
			}
			return
		}
		// What Validate accepts is sane.
		if o.Qty <= 0 || o.Qty > MaxQuantity || (o.Side != Buy && o.Side != Sell) {
			t.Fatalf("Validate accepted %+v", o)
		}
		b, all := fuzzBook(t)
		if err := b.Prepare(o); err != nil {
			return
		}
		out, err := b.Submit(o, tNow+tSec)
		if err == nil {
			all = append(all, o)
			var filled int64
			for _, f := range out.Fills {
				if f.Taker != o && f.Taker.Type != Stop && f.Taker.Type != StopLimit {
					t.Fatalf("fill taker %d is neither the order nor a stop", f.Taker.ID)
				}
				if f.Qty <= 0 || f.Price <= 0 || f.Maker.Account == f.Taker.Account {
					t.Fatalf("bad fill %+v", f)
				}
				if f.Taker == o {
					filled += f.Qty
				}
			}
			if filled != o.Filled {
				t.Fatalf("fills of the order sum to %d, Filled %d", filled, o.Filled)
			}
			switch {
			case (o.Type == Limit || o.Type == Market) && o.TIF == FOK && o.Status != Filled:
				t.Fatalf("accepted FOK order ended %s with %d of %d", o.Status, o.Filled, o.Qty)
			case (o.Type == Market || o.TIF == IOC) && o.Type != Stop && o.Type != StopLimit && o.Status.Active():
				t.Fatalf("%s %s order rests", o.Type, o.TIF)
			}
		}
		checkBook(t, b, all)
		// Amend and cancel whatever is still open with the fuzzed values.
		for _, r := range b.RestingOrders() {
			if _, err := b.Amend(r.ID, amend, limit, tNow+2*tSec); err == nil {
				checkBook(t, b, all)
			}
			if _, err := b.Cancel(r.ID, tNow+3*tSec, "fuzz"); err == nil {
				checkBook(t, b, all)
			}
			break
		}
		b.ExpireDue(tNow+tDay, 100)
		checkBook(t, b, all)
	})
}

func FuzzParsePrice(f *testing.F) {
	for _, s := range []string{"150.25", "150", "150.2", "0.01", "0", "0.00", "1000000", "1000000.00", "1000000.01",
		"", ".", "1.", ".5", "-1", "+1", "1.001", "1e3", "1,5", " 1", "9999999999", "007.50", "١٢٣", "1.2.3", "99999999.99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrice(s)
		if err != nil {
			if p != 0 {
				t.Fatalf("ParsePrice(%q) = %d with error %v", s, p, err)
			}
			return
		}
		if p <= 0 || p > MaxPrice {
			t.Fatalf("ParsePrice(%q) = %d, out of range", s, p)
		}
		f := FormatPrice(p)
		q, err := ParsePrice(f)
		if err != nil || q != p {
			t.Fatalf("ParsePrice(%q) = %d; FormatPrice → %q → %d, %v", s, p, f, q, err)
		}
		if FormatPrice(q) != f {
			t.Fatalf("FormatPrice not stable: %q vs %q", FormatPrice(q), f)
		}
	})
}
