package cluster_test

// Workloads of the chaos suite: simulated traders that run while faults
// are injected, recording every operation with its invocation and return
// time and its outcome (ok, failed, unknown).
//
//   - bank workers share an account (two or more per account) and do
//     deposits and withdrawals with amounts unique per account (so each
//     statement line names the operation that made it) and linearizable
//     balance reads: the per-account histories porcupine checks;
//   - market workers each own an account funded before the faults and
//     place orders of every kind (limit GTC/IOC, market, post-only,
//     stop-limit) with unique client order IDs, cancel some, and read
//     their portfolio.
//
// An operation whose outcome is unknown (transport.ErrOutcomeUnknown) is
// resolved the way a real client would: by sending it again with the same
// idempotency key or client order ID, at most chaosResolveTries times. The
// repeat is the same logical operation (same key), so its interval runs
// from the first call to the last return. One still unknown after that
// keeps outcome unknown: for the linearizability check it may or may not
// have happened (return time +∞).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

// Outcomes of an operation.
const (
	chaosOK      = "ok"
	chaosFailed  = "failed"
	chaosUnknown = "unknown"
)

// Operation kinds.
const (
	opDeposit   = "deposit"
	opWithdraw  = "withdraw"
	opRead      = "read"
	opOrder     = "order"
	opCancel    = "cancel"
	opPortfolio = "portfolio"
)

const (
	chaosResolveTries = 2
	chaosMaxOps       = 20000 // per history, a safety bound
)

// chaosOp is one recorded operation.
type chaosOp struct {
	ID      int
	Client  int    // porcupine client id: one per worker
	Worker  string // worker name (also its network endpoint)
	Stream  bool   // placed or cancelled through an order stream
	Account uint64
	Kind    string
	Amount  int64  // cents, deposits and withdrawals
	Key     string // idempotency key or client order ID
	Call    int64  // ns since the history started
	Return  int64  // ns since the history started; math.MaxInt64 when unknown
	Outcome string
	// Results of a definite outcome.
	Cash     int64 // balance after (ok deposits/withdrawals) or read
	HasCash  bool
	Rejected bool   // a business rejection that was applied as such (insufficient funds, rejected order)
	OrderID  uint64 // order placed
	Status   string // order status returned
	Resolved bool   // was unknown once, then resolved by a repeat
	Err      string
}

// chaosHistory collects operations from concurrent workers.
type chaosHistory struct {
	mu      sync.Mutex
	start   time.Time
	ops     []chaosOp
	clients int
}

func newChaosHistory() *chaosHistory { return &chaosHistory{start: time.Now()} }

func (h *chaosHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *chaosHistory) newClient() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients++
	return h.clients - 1
}

func (h *chaosHistory) add(op chaosOp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ops) >= chaosMaxOps {
		return
	}
	op.ID = len(h.ops)
	if op.Outcome == chaosUnknown {
		op.Return = math.MaxInt64
	}
	h.ops = append(h.ops, op)
}

// Ops returns a copy of the recorded operations.
func (h *chaosHistory) Ops() []chaosOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]chaosOp(nil), h.ops...)
}

// streamKind names an operation made through an order stream
// ("stream-order", "stream-cancel"); "" for the others (portfolio reads go
// over HTTP even in a stream worker).
func (op *chaosOp) streamKind() string {
	if !op.Stream || op.Kind == opPortfolio {
		return ""
	}
	return "stream-" + op.Kind
}

// Count returns operations by kind and outcome, e.g. "deposit/ok"; those
// made through order streams also as "stream-order/ok" and so on.
func chaosCount(ops []chaosOp) map[string]int {
	out := map[string]int{}
	for _, op := range ops {
		kinds := []string{op.Kind}
		if sk := op.streamKind(); sk != "" {
			kinds = append(kinds, sk)
		}
		for _, k := range kinds {
			out[k+"/"+op.Outcome]++
			if op.Resolved {
				out[k+"/resolved-after-unknown"]++
			}
		}
	}
	return out
}

// chaosFailures lists the distinct errors of operations that did not end
// ok, with how often each occurred, e.g. `stream-order/failed "...": 2`.
func chaosFailures(ops []chaosOp) []string {
	n := map[string]int{}
	for _, op := range ops {
		if op.Outcome == chaosOK {
			continue
		}
		kind := op.Kind
		if sk := op.streamKind(); sk != "" {
			kind = sk
		}
		msg := op.Err
		if len(msg) > 160 {
			msg = msg[:160] + "…"
		}
		n[fmt.Sprintf("%s/%s %q", kind, op.Outcome, msg)]++
	}
	out := make([]string, 0, len(n))
	for k, c := range n {
		out = append(out, fmt.Sprintf("%s: %d", k, c))
	}
	sort.Strings(out)
	return out
}

func chaosCountString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf(" %s=%d", k, m[k])
	}
	return s
}

// classify maps a client error to an outcome.
func classify(err error) string {
	switch {
	case err == nil:
		return chaosOK
	case errors.Is(err, transport.ErrOutcomeUnknown):
		return chaosUnknown
	default:
		return chaosFailed
	}
}

func parseCash(s string) (int64, bool) {
	c, err := trader.ParseCents(s)
	return int64(c), err == nil
}

// chaosWorkload runs workers until Stop.
type chaosWorkload struct {
	hist    *chaosHistory
	stop    chan struct{}
	wg      sync.WaitGroup
	stopped atomic.Bool
	// amounts hands out unique deposit/withdrawal amounts per account.
	amountMu sync.Mutex
	amounts  map[uint64]int64
	// Think time between a worker's operations (part of the workload, not
	// synchronization).
	thinkMin, thinkMax time.Duration
	deadline           time.Time // hard end for every worker
	idle               bool      // start no workers (tests that drive their own operations)
}

func newChaosWorkload(h *chaosHistory, maxRun time.Duration) *chaosWorkload {
	return &chaosWorkload{hist: h, stop: make(chan struct{}), amounts: map[uint64]int64{},
		thinkMin: 5 * time.Millisecond, thinkMax: 30 * time.Millisecond, deadline: time.Now().Add(maxRun)}
}

// Stop ends the workers and waits for their last operations.
func (w *chaosWorkload) Stop() {
	if w.stopped.CompareAndSwap(false, true) {
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *chaosWorkload) running() bool {
	select {
	case <-w.stop:
		return false
	default:
		return time.Now().Before(w.deadline)
	}
}

func (w *chaosWorkload) think(rng *rand.Rand) bool {
	d := w.thinkMin
	if w.thinkMax > w.thinkMin {
		d += time.Duration(rng.Int64N(int64(w.thinkMax - w.thinkMin)))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.stop:
		return false
	case <-t.C:
		return time.Now().Before(w.deadline)
	}
}

// uniqueAmount returns base plus a per-account counter, in cents, so no
// two operations on an account move the same amount.
func (w *chaosWorkload) uniqueAmount(acct uint64, base int64) int64 {
	w.amountMu.Lock()
	defer w.amountMu.Unlock()
	w.amounts[acct]++
	return base + w.amounts[acct]
}

// bankWorker does deposits, withdrawals and linearizable reads on acct.
func (w *chaosWorkload) bankWorker(name string, cl *transport.Client, acct uint64, seed uint64) {
	if w.idle {
		return
	}
	w.wg.Add(1)
	client := w.hist.newClient()
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 7))
		for i := 0; i < chaosMaxOps && w.running(); i++ {
			op := chaosOp{Client: client, Worker: name, Account: acct}
			switch r := rng.IntN(100); {
			case r < 40:
				op.Kind, op.Amount = opDeposit, w.uniqueAmount(acct, 1000)
			case r < 65:
				op.Kind, op.Amount = opWithdraw, w.uniqueAmount(acct, 300)
			default:
				op.Kind = opRead
			}
			w.bankOp(cl, &op)
			w.hist.add(op)
			if !w.think(rng) {
				return
			}
		}
	}()
}

func (w *chaosWorkload) bankOp(cl *transport.Client, op *chaosOp) {
	ctx := context.Background()
	op.Call = w.hist.now()
	defer func() { op.Return = w.hist.now() }()
	if op.Kind == opRead {
		a, err := cl.Account(ctx, transport.Linearizable)
		op.Outcome = classify(err)
		if op.Outcome == chaosUnknown {
			op.Outcome = chaosFailed // reads change nothing
		}
		if err != nil {
			op.Err = err.Error()
			return
		}
		op.Cash, op.HasCash = parseCash(a.Cash)
		return
	}
	op.Key = transport.NewIdempotencyKey()
	amount := trader.Cents(op.Amount).String()
	for try := 0; try <= chaosResolveTries; try++ {
		var a *transport.Account
		var err error
		if op.Kind == opDeposit {
			a, err = cl.Deposit(ctx, amount, op.Key)
		} else {
			a, err = cl.Withdraw(ctx, amount, op.Key)
		}
		op.Outcome = classify(err)
		if err != nil {
			op.Err = err.Error()
		}
		switch {
		case err == nil:
			op.Cash, op.HasCash = parseCash(a.Cash)
			op.Err = ""
			return
		case op.Kind == opWithdraw && transport.ErrorCode(err) == "insufficient_funds":
			op.Outcome, op.Rejected = chaosOK, true
			return
		case op.Outcome == chaosUnknown:
			if try < chaosResolveTries && w.running() {
				op.Resolved = true
				continue
			}
			return
		case op.Resolved:
			// A repeat of a maybe-applied write failed outright (it was
			// refused before its key was looked up): still unknown.
			op.Outcome = chaosUnknown
			return
		default:
			return
		}
	}
}

// chaosOrderRef are the reference prices (cents) the market workers trade
// around; they are market.DefaultUniverse's.
var chaosOrderRef = map[string]int64{"AAPL": 18910, "MSFT": 41520}

// marketWorker places and cancels orders on its own account, over plain
// HTTP or, when st is not nil, through st's order streams.
func (w *chaosWorkload) marketWorker(name string, cl *transport.Client, acct uint64, seed uint64, st *chaosStreamer) {
	if w.idle {
		return
	}
	w.wg.Add(1)
	client := w.hist.newClient()
	stream := st != nil
	place, cancel := cl.PlaceOrder, cl.Cancel
	if stream {
		place, cancel = st.place, st.cancel
	}
	go func() {
		defer w.wg.Done()
		if stream {
			defer st.drop()
		}
		rng := rand.New(rand.NewPCG(seed, 11))
		var open []uint64
		for i := 0; i < chaosMaxOps && w.running(); i++ {
			op := chaosOp{Client: client, Worker: name, Account: acct, Stream: stream}
			switch r := rng.IntN(100); {
			case r < 8 && len(open) > 0:
				op.Kind = opCancel
				k := rng.IntN(len(open))
				op.OrderID = open[k]
				open = append(open[:k], open[k+1:]...)
				w.cancelOp(cancel, &op)
			case r < 14:
				op.Kind = opPortfolio
				op.Call = w.hist.now()
				_, err := cl.Portfolio(context.Background(), transport.Linearizable)
				op.Return = w.hist.now()
				op.Outcome = classify(err)
				if op.Outcome == chaosUnknown {
					op.Outcome = chaosFailed
				}
				if err != nil {
					op.Err = err.Error()
				}
			default:
				op.Kind = opOrder
				w.orderOp(place, &op, chaosRandomOrder(rng))
				if op.OrderID != 0 && (op.Status == transport.StatusOpen || op.Status == transport.StatusPartiallyFilled) {
					open = append(open, op.OrderID)
				}
			}
			w.hist.add(op)
			if !w.think(rng) {
				return
			}
		}
	}()
}

// chaosStreamer is how a trading program uses an order stream through
// faults: one stream at a time, each call bounded by the client's
// deadline. When a call ends without an answer (the node is paused,
// partitioned or dead) or with an answer that says this node cannot get
// orders committed now, the stream is aborted (never closed: Close would
// wait for the node) and the next call opens a new one, starting from the
// node after the one that failed. A repeat with the same client order ID
// resolves an unknown outcome, exactly as over HTTP.
type chaosStreamer struct {
	cl     *transport.Client
	within time.Duration // bound on each call
	ndjson bool          // open NDJSON streams (else binary)
	s      *transport.OrderStream
}

func (st *chaosStreamer) stream() (*transport.OrderStream, error) {
	if st.s != nil {
		return st.s, nil
	}
	// The stream lives until drop; the open is bounded by the client's
	// per-request timeout.
	open := st.cl.OpenOrderStream
	if st.ndjson {
		open = st.cl.OpenOrderStreamNDJSON
	}
	s, err := open(context.Background())
	if err != nil {
		return nil, err
	}
	st.s = s
	return s, nil
}

// drop aborts the stream and makes the next open start at another node.
func (st *chaosStreamer) drop() {
	if st.s == nil {
		return
	}
	st.s.Abort()
	failed := st.s.Node()
	st.s = nil
	nodes := st.cl.Nodes()
	if i := slices.Index(nodes, failed); i >= 0 {
		_ = st.cl.SetPreferred(nodes[(i+1)%len(nodes)])
	}
}

// after drops the stream after a call whose failure says the stream or
// its node is of no use now.
func (st *chaosStreamer) after(err error) {
	switch {
	case err == nil:
	case errors.Is(err, transport.ErrOutcomeUnknown), errors.Is(err, transport.ErrUnavailable),
		errors.Is(err, transport.ErrNoLeader):
		st.drop()
	}
}

// chaosStreamCall runs one request on the stream, opening one first if
// needed. An ErrUnavailable that is not an unknown outcome means the
// request was not applied: either the stream was found already broken
// (its node went away while it was idle) and refused it unsent, or the
// node answered unavailable, which it does only for requests it did not
// commit (a possibly applied one is outcome_unknown). A program then
// opens a new stream and sends it there, once: a place is idempotent by
// client ID, and a repeated cancel answers order_not_open, counted ok.
func chaosStreamCall[T any](st *chaosStreamer, ctx context.Context, do func(context.Context, *transport.OrderStream) (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		s, err := st.stream()
		if err != nil {
			return zero, err
		}
		cctx, cancel := context.WithTimeout(ctx, st.within)
		v, err := do(cctx, s)
		cancel()
		st.after(err)
		if try == 0 && errors.Is(err, transport.ErrUnavailable) && !errors.Is(err, transport.ErrOutcomeUnknown) {
			continue
		}
		return v, err
	}
}

func (st *chaosStreamer) place(ctx context.Context, req transport.OrderRequest) (*transport.Order, error) {
	return chaosStreamCall(st, ctx, func(ctx context.Context, s *transport.OrderStream) (*transport.Order, error) {
		return s.Place(ctx, req)
	})
}

func (st *chaosStreamer) cancel(ctx context.Context, id uint64) (*transport.Order, error) {
	return chaosStreamCall(st, ctx, func(ctx context.Context, s *transport.OrderStream) (*transport.Order, error) {
		return s.Cancel(ctx, id)
	})
}

// chaosRandomOrder draws an order of any kind near the reference price.
func chaosRandomOrder(rng *rand.Rand) transport.OrderRequest {
	syms := []string{"AAPL", "MSFT"}
	sym := syms[rng.IntN(len(syms))]
	ref := chaosOrderRef[sym]
	side := "buy"
	if rng.IntN(2) == 0 {
		side = "sell"
	}
	price := func(spread int64) string { return trader.Cents(ref + rng.Int64N(2*spread+1) - spread).String() }
	req := transport.OrderRequest{ClientID: transport.NewClientID(), Symbol: sym, Side: side, Quantity: 1 + rng.Int64N(5)}
	switch r := rng.IntN(100); {
	case r < 55:
		req.Type, req.TIF, req.LimitPrice = "limit", "gtc", price(40)
	case r < 70:
		req.Type, req.TIF, req.LimitPrice = "limit", "ioc", price(40)
	case r < 80:
		req.Type = "market"
	case r < 92:
		req.Type, req.TIF, req.LimitPrice, req.PostOnly = "limit", "gtc", price(40), true
	default:
		stop := ref + 5 + rng.Int64N(30)
		limit := stop + 10
		if side == "sell" {
			stop = ref - 5 - rng.Int64N(30)
			limit = stop - 10
		}
		req.Type, req.TIF = "stop_limit", "gtc"
		req.StopPrice, req.LimitPrice = trader.Cents(stop).String(), trader.Cents(limit).String()
	}
	return req
}

// orderOp places req with place (over HTTP or an order stream), resolving
// an unknown outcome by repeating it with the same client order ID.
func (w *chaosWorkload) orderOp(place func(context.Context, transport.OrderRequest) (*transport.Order, error), op *chaosOp, req transport.OrderRequest) {
	ctx := context.Background()
	op.Key = req.ClientID
	op.Call = w.hist.now()
	defer func() { op.Return = w.hist.now() }()
	for try := 0; try <= chaosResolveTries; try++ {
		o, err := place(ctx, req)
		op.Outcome = classify(err)
		if err != nil {
			op.Err = err.Error()
		}
		var rej *transport.OrderRejectedError
		switch {
		case err == nil:
			op.OrderID, op.Status, op.Err = o.OrderID, o.Status, ""
			return
		case errors.As(err, &rej):
			// Applied as a rejection: the order is stored as rejected.
			op.Outcome, op.Rejected = chaosOK, true
			if rej.Order != nil {
				op.OrderID, op.Status = rej.Order.OrderID, rej.Order.Status
			}
			return
		case op.Outcome == chaosUnknown:
			if try < chaosResolveTries && w.running() {
				op.Resolved = true
				continue
			}
			return
		case op.Resolved:
			op.Outcome = chaosUnknown
			return
		default:
			return
		}
	}
}

func (w *chaosWorkload) cancelOp(cancel func(context.Context, uint64) (*transport.Order, error), op *chaosOp) {
	op.Call = w.hist.now()
	_, err := cancel(context.Background(), op.OrderID)
	op.Return = w.hist.now()
	op.Outcome = classify(err)
	if err != nil {
		op.Err = err.Error()
		if transport.ErrorCode(err) == transport.CodeOrderNotOpen {
			op.Outcome, op.Rejected = chaosOK, true // filled or cancelled meanwhile
		}
	}
}
