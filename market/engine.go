package market

import "fmt"

// Outcome is everything one command did to a book.
type Outcome struct {
	Fills   []Fill
	Touched []*Order // every order whose state changed, in order of first change
}

func (out *Outcome) touch(o *Order) {
	for _, t := range out.Touched {
		if t == o {
			return
		}
	}
	out.Touched = append(out.Touched, o)
}

// Validate checks an order's own fields against the instrument rules before
// it reaches a book. Prices are whole cents, so every price is on the tick.
func Validate(o *Order) error {
	if o.Side != Buy && o.Side != Sell {
		return fmt.Errorf("%w: side must be buy or sell", ErrBadOrder)
	}
	if o.Qty <= 0 {
		return fmt.Errorf("%w: quantity must be positive, got %d", ErrBadQuantity, o.Qty)
	}
	if o.Qty > MaxQuantity {
		return fmt.Errorf("%w: quantity %d exceeds the maximum %d", ErrBadQuantity, o.Qty, MaxQuantity)
	}
	checkPrice := func(name string, p int64) error {
		if p <= 0 || p > MaxPrice {
			return fmt.Errorf("%w: %s price must be between 0.01 and %d.%02d", ErrBadPrice, name, MaxPrice/100, MaxPrice%100)
		}
		return nil
	}
	switch o.Type {
	case Market:
		if o.Limit != 0 || o.Stop != 0 {
			return fmt.Errorf("%w: a market order takes no limit or stop price", ErrBadOrder)
		}
		if o.PostOnly {
			return fmt.Errorf("%w: a market order cannot be post-only", ErrBadOrder)
		}
	case Limit:
		if err := checkPrice("limit", o.Limit); err != nil {
			return err
		}
		if o.Stop != 0 {
			return fmt.Errorf("%w: a limit order takes no stop price", ErrBadOrder)
		}
	case Stop:
		if err := checkPrice("stop", o.Stop); err != nil {
			return err
		}
		if o.PostOnly {
			return fmt.Errorf("%w: a stop order cannot be post-only", ErrBadOrder)
		}
	case StopLimit:
		if err := checkPrice("stop", o.Stop); err != nil {
			return err
		}
		if err := checkPrice("limit", o.Limit); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown order type", ErrBadOrder)
	}
	switch o.TIF {
	case GTC, DAY:
		if o.Type == Market {
			return fmt.Errorf("%w: a market order never rests: use tif ioc or fok", ErrBadOrder)
		}
	case IOC, FOK:
		if o.PostOnly {
			return fmt.Errorf("%w: post-only orders must be able to rest (gtc or day)", ErrBadOrder)
		}
	default:
		return fmt.Errorf("%w: unknown time in force", ErrBadOrder)
	}
	return nil
}

// Prepare sets the fields a book decides at entry: the collar cap of
// orders without a limit, and rejects limit prices beyond the collar.
// Call it before reserving funds, since the cap is what a buy reserves.
func (b *Book) Prepare(o *Order) error {
	ref := b.Reference()
	if o.Type == Stop {
		ref = o.Stop // collar around the trigger price
	}
	low, high := CollarBounds(ref)
	switch o.Type {
	case Market, Stop:
		if o.Side == Buy {
			o.Cap = high
		} else {
			o.Cap = low
		}
	case Limit:
		return CheckCollar(o.Side, o.Limit, ref)
	}
	return nil
}

// CheckCollar rejects a limit price beyond the collar around ref: a buy
// more than 10% over it, a sell more than 10% under.
func CheckCollar(side Side, limit, ref int64) error {
	low, high := CollarBounds(ref)
	if side == Buy && limit > high {
		return fmt.Errorf("%w: buy limit %s is above %s (10%% over the reference %s)", ErrBeyondCollar, cents(limit), cents(high), cents(ref))
	}
	if side == Sell && limit < low {
		return fmt.Errorf("%w: sell limit %s is below %s (10%% under the reference %s)", ErrBeyondCollar, cents(limit), cents(low), cents(ref))
	}
	return nil
}

func cents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }

func (b *Book) nextSeq() uint64 {
	b.NextSeq++
	return b.NextSeq
}

// acceptable reports whether a taker with this bound trades at price.
func acceptable(side Side, bound, price int64) bool {
	if side == Buy {
		return price <= bound
	}
	return price >= bound
}

func expired(o *Order, now int64) bool { return o.ExpiresAt != 0 && now >= o.ExpiresAt }

// fillable is the quantity a taker could fill right now: opposite orders at
// acceptable prices, not expired and not its owner's (those would be
// cancelled by self-trade prevention, not traded).
func (b *Book) fillable(t *Order, now int64) int64 {
	opp := b.sideOf(t.Side.Opposite())
	bound := t.PriceBound()
	var n int64
	for i := len(opp.levels) - 1; i >= 0 && n < t.Remaining(); i-- {
		l := opp.levels[i]
		if !acceptable(t.Side, bound, l.price) {
			break
		}
		for _, o := range l.orders[l.head:] {
			if o != nil && o.Account != t.Account && !expired(o, now) {
				n += o.Remaining()
			}
		}
	}
	return n
}

// wouldTake reports whether a post-only order would trade on arrival.
func (b *Book) wouldTake(o *Order) bool {
	l := b.sideOf(o.Side.Opposite()).best()
	return l != nil && acceptable(o.Side, o.Limit, l.price)
}

// Submit enters a validated, prepared and funded order with ID and time
// set. A post-only order that would take, or a fill-or-kill order that
// cannot fill whole, is refused with an error and nothing changes.
// Otherwise the order matches, rests or waits for its trigger, and any stop
// orders the resulting trades trigger are run too.
func (b *Book) Submit(o *Order, now int64) (*Outcome, error) {
	if o.PostOnly && b.wouldTake(o) {
		return nil, fmt.Errorf("%w: best opposite price would fill it", ErrWouldTake)
	}
	waiting := (o.Type == Stop || o.Type == StopLimit) && !b.triggerReached(o)
	if !waiting && o.TIF == FOK && b.fillable(o, now) < o.Remaining() {
		return nil, fmt.Errorf("%w: only %d of %d available at acceptable prices", ErrCannotFill, b.fillable(o, now), o.Remaining())
	}
	out := &Outcome{}
	o.Status = Open
	o.Created, o.Updated = now, now
	o.Seq = b.nextSeq()
	if o.TIF == DAY {
		o.ExpiresAt = EndOfUTCDay(now)
		b.days = append(b.days, o)
	}
	out.touch(o)
	if waiting {
		b.stops = append(b.stops, o)
		return out, nil
	}
	if o.Type == Stop || o.Type == StopLimit {
		o.Triggered = true
	}
	b.take(o, now, out)
	b.fireStops(now, out)
	return out, nil
}

// take matches o against the book, then rests or ends it.
func (b *Book) take(t *Order, now int64, out *Outcome) {
	opp := b.sideOf(t.Side.Opposite())
	bound := t.PriceBound()
	for t.Remaining() > 0 {
		l := opp.best()
		if l == nil || !acceptable(t.Side, bound, l.price) {
			break
		}
		m := l.front()
		switch {
		case expired(m, now):
			b.unrest(m)
			m.Status, m.Reason, m.Updated = Expired, "day order expired", now
			out.touch(m)
			continue
		case m.Account == t.Account:
			b.unrest(m)
			m.Status, m.Reason, m.Updated = Cancelled, "self-trade prevention: cancelled by own incoming order", now
			out.touch(m)
			continue
		}
		q := min(t.Remaining(), m.Remaining())
		price := l.price
		m.Filled += q
		m.Notional += q * price
		l.qty -= q
		t.Filled += q
		t.Notional += q * price
		m.Updated = now
		if m.Remaining() == 0 {
			m.Status = Filled
			opp.remove(m)
			delete(b.resting, m.ID)
		} else {
			m.Status = PartiallyFilled
		}
		b.Last = price
		b.TradeSeq++
		out.Fills = append(out.Fills, Fill{Maker: m, Taker: t, Price: price, Qty: q})
		out.touch(m)
	}
	t.Updated = now
	switch {
	case t.Remaining() == 0:
		t.Status = Filled
	case (t.Type == Limit || t.Type == StopLimit) && (t.TIF == GTC || t.TIF == DAY):
		if t.Filled > 0 {
			t.Status = PartiallyFilled
		}
		b.sideOf(t.Side).add(t, t.Limit)
		b.resting[t.ID] = t
	default:
		t.Status = Cancelled
		switch {
		case t.Type == Market || t.Type == Stop:
			t.Reason = "remainder cancelled: no liquidity within the collar"
		default:
			t.Reason = "remainder cancelled: immediate-or-cancel"
		}
	}
	out.touch(t)
}

func (b *Book) unrest(o *Order) {
	b.sideOf(o.Side).remove(o)
	delete(b.resting, o.ID)
}

func (b *Book) triggerReached(o *Order) bool {
	if b.Last == 0 {
		return false
	}
	if o.Side == Buy {
		return b.Last >= o.Stop
	}
	return b.Last <= o.Stop
}

// fireStops runs every waiting stop whose trigger the last price reached,
// oldest first, until none is left to fire.
func (b *Book) fireStops(now int64, out *Outcome) {
	for fired := 0; fired < MaxStopsFired; fired++ {
		idx := -1
		for i, s := range b.stops {
			if s.Status.Active() && b.triggerReached(s) {
				idx = i
				break
			}
		}
		if idx < 0 {
			return
		}
		s := b.stops[idx]
		b.stops = append(b.stops[:idx], b.stops[idx+1:]...)
		s.Triggered = true
		if expired(s, now) {
			s.Status, s.Reason, s.Updated = Expired, "day order expired", now
			out.touch(s)
			continue
		}
		s.Seq = b.nextSeq()
		if s.TIF == FOK && b.fillable(s, now) < s.Remaining() {
			s.Status, s.Reason, s.Updated = Cancelled, "fill-or-kill could not fill in full when triggered", now
			out.touch(s)
			continue
		}
		if s.PostOnly && b.wouldTake(s) {
			s.Status, s.Reason, s.Updated = Cancelled, "post-only order would take liquidity when triggered", now
			out.touch(s)
			continue
		}
		b.take(s, now, out)
	}
}

// Cancel removes an open order. The caller checks ownership.
func (b *Book) Cancel(id uint64, now int64, reason string) (*Order, error) {
	o, ok := b.Order(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d is not open in %s", ErrUnknownOrder, id, b.Symbol)
	}
	b.drop(o)
	o.Status, o.Reason, o.Updated = Cancelled, reason, now
	return o, nil
}

func (b *Book) drop(o *Order) {
	if _, ok := b.resting[o.ID]; ok {
		b.unrest(o)
		return
	}
	for i, s := range b.stops {
		if s == o {
			b.stops = append(b.stops[:i], b.stops[i+1:]...)
			return
		}
	}
}

// Amend changes an open order's quantity and/or limit price. Reducing the
// quantity keeps time priority; a new price or a larger quantity loses it:
// the order is re-entered as if new (and may trade). newQty is the new
// total quantity (including what has filled); 0 keeps it; newLimit 0 keeps
// the price. The caller checks ownership and re-reserves funds.
func (b *Book) Amend(id uint64, newQty, newLimit, now int64) (*Outcome, error) {
	o, ok := b.Order(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d is not open in %s", ErrUnknownOrder, id, b.Symbol)
	}
	if expired(o, now) {
		return nil, fmt.Errorf("%w: day order %d has expired", ErrOrderDone, id)
	}
	if newQty == 0 {
		newQty = o.Qty
	}
	if newLimit == 0 {
		newLimit = o.Limit
	}
	if newQty <= o.Filled {
		return nil, fmt.Errorf("%w: new quantity %d must exceed the %d already filled", ErrBadQuantity, newQty, o.Filled)
	}
	if newQty > MaxQuantity {
		return nil, fmt.Errorf("%w: quantity %d exceeds the maximum %d", ErrBadQuantity, newQty, MaxQuantity)
	}
	if newLimit != o.Limit && o.Type != Limit && o.Type != StopLimit {
		return nil, fmt.Errorf("%w: only limit and stop-limit orders have a limit price to amend", ErrBadOrder)
	}
	if (o.Type == Limit || o.Type == StopLimit) && (newLimit <= 0 || newLimit > MaxPrice) {
		return nil, fmt.Errorf("%w: limit price out of range", ErrBadPrice)
	}
	out := &Outcome{}
	if newLimit == o.Limit && newQty <= o.Qty {
		// Reduction in place: priority kept.
		if o.level != nil {
			o.level.qty -= o.Qty - newQty
		}
		o.Qty, o.Updated = newQty, now
		out.touch(o)
		return out, nil
	}
	probe := *o
	probe.Qty, probe.Limit, probe.level = newQty, newLimit, nil
	if probe.Type != Stop && probe.Type != StopLimit || probe.Triggered {
		if probe.PostOnly && b.wouldTake(&probe) {
			return nil, fmt.Errorf("%w: the new price would fill it", ErrWouldTake)
		}
		if err := b.Prepare(&probe); err != nil {
			return nil, err
		}
	}
	b.drop(o)
	o.Qty, o.Limit, o.Updated = newQty, newLimit, now
	o.Seq = b.nextSeq()
	out.touch(o)
	if (o.Type == Stop || o.Type == StopLimit) && !o.Triggered {
		b.stops = append(b.stops, o)
		return out, nil
	}
	b.take(o, now, out)
	b.fireStops(now, out)
	return out, nil
}

// ExpireDue ends up to max DAY orders whose day is over at now.
func (b *Book) ExpireDue(now int64, max int) []*Order {
	var done []*Order
	keep := b.days[:0]
	for i, o := range b.days {
		if len(done) >= max {
			keep = append(keep, b.days[i:]...)
			break
		}
		switch {
		case !o.Status.Active():
			// already finished: drop from the list
		case expired(o, now):
			b.drop(o)
			o.Status, o.Reason, o.Updated = Expired, "day order expired", now
			done = append(done, o)
		default:
			keep = append(keep, o)
		}
	}
	clear(b.days[len(keep):])
	b.days = keep
	return done
}
