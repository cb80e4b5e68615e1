package market

import (
	"fmt"
	"slices"
	"sort"
)

// level is one price level: orders in time priority.
type level struct {
	price  int64
	orders []*Order // FIFO from head
	head   int
	live   int   // non-nil entries in orders
	qty    int64 // total remaining
}

func (l *level) front() *Order {
	for l.head < len(l.orders) {
		if o := l.orders[l.head]; o != nil {
			return o
		}
		l.head++
	}
	return nil
}

func (l *level) empty() bool { return l.front() == nil }

func (l *level) remove(o *Order) {
	for i := l.head; i < len(l.orders); i++ {
		if l.orders[i] == o {
			l.orders[i] = nil
			l.live--
			break
		}
	}
	l.qty -= o.Remaining()
	// Compact when mostly holes, so removal stays cheap on long queues.
	// Holes left by cancels behind a long-lived front order are counted
	// too: the head never passes them.
	if len(l.orders) > 32 && len(l.orders) > 2*l.live {
		n := 0
		for _, x := range l.orders[l.head:] {
			if x != nil {
				l.orders[n] = x
				n++
			}
		}
		clear(l.orders[n:])
		l.orders = l.orders[:n]
		l.head = 0
	}
}

// bookSide keeps levels sorted from worst to best price, so the best level
// is the last element and consuming it is cheap.
type bookSide struct {
	side   Side
	levels []*level
}

// better reports whether price a is better than b for this side.
func (s *bookSide) better(a, b int64) bool {
	if s.side == Buy {
		return a > b
	}
	return a < b
}

func (s *bookSide) best() *level {
	for n := len(s.levels); n > 0; n = len(s.levels) {
		l := s.levels[n-1]
		if !l.empty() {
			return l
		}
		s.levels = s.levels[:n-1]
	}
	return nil
}

// index returns the position of price, or where it would be inserted.
func (s *bookSide) index(price int64) (int, bool) {
	i := sort.Search(len(s.levels), func(i int) bool { return !s.better(price, s.levels[i].price) })
	return i, i < len(s.levels) && s.levels[i].price == price
}

func (s *bookSide) add(o *Order, price int64) {
	i, found := s.index(price)
	var l *level
	if found {
		l = s.levels[i]
	} else {
		l = &level{price: price}
		s.levels = append(s.levels, nil)
		copy(s.levels[i+1:], s.levels[i:])
		s.levels[i] = l
	}
	l.orders = append(l.orders, o)
	l.live++
	l.qty += o.Remaining()
	o.level = l
}

func (s *bookSide) remove(o *Order) {
	l := o.level
	if l == nil {
		return
	}
	l.remove(o)
	o.level = nil
	if l.empty() {
		if i, found := s.index(l.price); found && s.levels[i] == l {
			s.levels = append(s.levels[:i], s.levels[i+1:]...)
		}
	}
}

// Level is an aggregated price level for market data.
type Level struct {
	Price  int64
	Qty    int64
	Orders int
}

// depth returns up to n aggregated levels, best first.
func (s *bookSide) depth(n int) []Level {
	var out []Level
	for i := len(s.levels) - 1; i >= 0 && len(out) < n; i-- {
		l := s.levels[i]
		cnt := 0
		for _, o := range l.orders[l.head:] {
			if o != nil {
				cnt++
			}
		}
		if cnt > 0 {
			out = append(out, Level{Price: l.price, Qty: l.qty, Orders: cnt})
		}
	}
	return out
}

// Book is one symbol's order book plus its waiting stop orders.
type Book struct {
	Symbol   string
	Ref      int64  // reference price: from the instrument table or the feed
	Last     int64  // last trade price; 0 before the first trade
	TradeSeq uint64 // sequence of the last trade; gap-free per symbol
	NextSeq  uint64 // time-priority counter

	bids, asks bookSide
	resting    map[uint64]*Order // orders in the book, by ID (lookup only)
	stops      []*Order          // waiting stops in entry order
	days       []*Order          // DAY orders in entry order, for expiry sweeps
}

// NewBook returns an empty book.
func NewBook(symbol string, ref int64) *Book {
	return &Book{
		Symbol: symbol, Ref: ref,
		bids: bookSide{side: Buy}, asks: bookSide{side: Sell},
		resting: map[uint64]*Order{},
	}
}

func (b *Book) sideOf(s Side) *bookSide {
	if s == Buy {
		return &b.bids
	}
	return &b.asks
}

// Reference is the price collars are computed from: the last trade, or the
// instrument's reference before any trade.
func (b *Book) Reference() int64 {
	if b.Last > 0 {
		return b.Last
	}
	return b.Ref
}

// BestBid returns the best bid price and quantity (0, 0 when empty).
func (b *Book) BestBid() (int64, int64) {
	if l := b.bids.best(); l != nil {
		return l.price, l.qty
	}
	return 0, 0
}

// BestAsk returns the best ask price and quantity (0, 0 when empty).
func (b *Book) BestAsk() (int64, int64) {
	if l := b.asks.best(); l != nil {
		return l.price, l.qty
	}
	return 0, 0
}

// Depth returns up to n aggregated levels per side, best first.
func (b *Book) Depth(n int) (bids, asks []Level) {
	return b.bids.depth(n), b.asks.depth(n)
}

// Order returns a resting or waiting order by ID.
func (b *Book) Order(id uint64) (*Order, bool) {
	if o, ok := b.resting[id]; ok {
		return o, true
	}
	for _, o := range b.stops {
		if o.ID == id {
			return o, true
		}
	}
	return nil, false
}

// Restore puts an open order back while rebuilding a book from storage. It
// must be called in Seq order per side.
func (b *Book) Restore(o *Order) error {
	if !o.Status.Active() {
		return fmt.Errorf("%w: restore of %s order %d", ErrBadOrder, o.Status, o.ID)
	}
	if (o.Type == Stop || o.Type == StopLimit) && !o.Triggered {
		b.stops = append(b.stops, o)
	} else {
		b.sideOf(o.Side).add(o, o.Limit)
		b.resting[o.ID] = o
	}
	if o.TIF == DAY {
		// Live books list DAY orders in entry order, which is ID order; a
		// bounded expiry sweep must pick the same ones after a restart.
		i := len(b.days)
		for i > 0 && b.days[i-1].ID > o.ID {
			i--
		}
		b.days = slices.Insert(b.days, i, o)
	}
	return nil
}

// Crossed reports whether the best bid is at or above the best ask, which
// must never be true between commands.
func (b *Book) Crossed() bool {
	bp, _ := b.BestBid()
	ap, _ := b.BestAsk()
	return bp > 0 && ap > 0 && bp >= ap
}

// RestingOrders returns every order in the book and every waiting stop, in
// a deterministic order (bids best-first, asks best-first, then stops).
func (b *Book) RestingOrders() []*Order {
	var out []*Order
	for _, s := range []*bookSide{&b.bids, &b.asks} {
		for i := len(s.levels) - 1; i >= 0; i-- {
			l := s.levels[i]
			for _, o := range l.orders[l.head:] {
				if o != nil {
					out = append(out, o)
				}
			}
		}
	}
	return append(out, b.stops...)
}
