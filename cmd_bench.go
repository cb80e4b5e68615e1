package main

// `hats bench`: the load generator a user runs against any cluster. It
// registers and funds its own traders, drives orders (or deposits) from
// many concurrent clients for a bounded time or count, and reports
// throughput, latency percentiles, errors by kind and a conservation check
// of its traders' cash and shares.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

// Defaults and bounds of `hats bench`.
const (
	benchDefaultMix     = "limit:70,market:20,cancel:10"
	benchDefaultSymbols = "AAPL,MSFT"
	benchMaxClients     = 10_000
	benchMaxTraders     = 1_000
	benchSetupParallel  = 8                // concurrent registrations (bcrypt is slow by design)
	benchCash           = 1_000_000_000_00 // $1,000,000,000.00 deposited per trader
	benchShares         = 1_000_000        // shares of each symbol deposited per trader
	benchDepositCents   = 100              // a "deposit" operation adds $1.00
	benchPriceBandBps   = 50               // limit prices within ±0.5% of the reference
	benchMaxQty         = 10               // orders are for 1 to 10 shares
	benchOpenRing       = 256              // open orders a client remembers for cancels
	benchMaxPages       = 100_000          // statement pages read per trader (10,000 entries each)
	benchMaxTracked     = 1 << 20          // acknowledged fills remembered per trader for the check
	benchProgressEvery  = 500 * time.Millisecond
	benchHistMaxNanos   = int64(1) << 37 // latencies clamp at about 137 s
	maxPipeline         = 1024           // the server's bound on requests in flight per stream
)

// benchKind is one kind of operation in the mix.
type benchKind int

const (
	kindLimit benchKind = iota
	kindMarket
	kindCancel
	kindDeposit
	numKinds
)

var kindNames = [numKinds]string{"limit", "market", "cancel", "deposit"}

func (k benchKind) String() string { return kindNames[k] }

func benchCommand() *cli.Command {
	flags := append(clientFlags(), withEnv(
		&cli.IntFlag{Name: "clients", Value: 16, Usage: "`N` concurrent clients, each with its own connection"},
		&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "run for `D` (with --orders: at most D)"},
		&cli.IntFlag{Name: "orders", Usage: "stop after `N` operations in all (0: run for --duration)"},
		&cli.StringFlag{Name: "symbols", Value: benchDefaultSymbols, Usage: "comma-separated `LIST` of symbols to trade"},
		&cli.StringFlag{Name: "mix", Value: benchDefaultMix, Usage: "operation `WEIGHTS` out of limit, market, cancel and deposit, e.g. limit:70,market:20,cancel:10"},
		&cli.Float64Flag{Name: "rate", Usage: "open loop: start `R` operations per second in all (0: closed loop, each client sends its next operation when the last is answered)"},
		&cli.IntFlag{Name: "traders", Usage: "`N` traders to register and fund; clients share them round robin (default: the smaller of --clients and 32)"},
		&cli.BoolFlag{Name: "stream", Usage: "place and cancel orders on the fast order-entry path (one order stream per client) instead of one HTTP request each"},
		&cli.BoolFlag{Name: "ndjson", Usage: "with --stream: use the order stream's NDJSON encoding instead of the binary one the Go client uses"},
		&cli.IntFlag{Name: "pipeline", Value: 1, Usage: "with --stream: `P` clients share each order stream (of one trader), so each connection carries up to P requests in flight, as a program pipelining orders would"},
		&cli.StringFlag{Name: "via", Value: benchViaAssigned, Usage: "which Trading Server each client talks to: assigned (the one the LDS assigns at login), leader, or followers (round robin)"},
		&cli.StringFlag{Name: "histogram", Usage: "write the latency histogram to `FILE`: PNG if it ends in .png, else a self-contained HTML page"},
		&cli.StringFlag{Name: "cpu-profile", Usage: "write a Go CPU profile of hats bench itself to `FILE` (go tool pprof reads it), to see what the load generator costs on a shared machine"},
	)...)
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a cluster with orders from many clients and report throughput, latency and a conservation check",
		Description: "hats bench registers its own traders (names start with bench-RUNID-), funds them with cash and shares of every " +
			"symbol, then sends operations from --clients concurrent clients: limit orders within 0.5% of the reference price, " +
			"market orders, cancels of the client's own open orders and $1.00 deposits, in the --mix proportions. It stops after " +
			"--duration or --orders, whichever comes first, waits for the operations in flight, and prints throughput, latency " +
			"p50/p90/p99/p99.9/max, errors by kind, the longest time without an acknowledgement (a failover shows up there), and " +
			"a conservation check: each trader's cash and shares now must equal what they were after funding plus every movement " +
			"on its statement, with running balances that add up, nothing negative and every deposit counted once. The check " +
			"failing makes the exit status 1. Latency is measured from the moment an operation was due: with --rate, time spent " +
			"waiting for a free client counts. A live progress line goes to stderr when it is a terminal. --cluster and --insecure " +
			"work as for hats trade (the session file is only read for a default --cluster); --timeout bounds each operation, " +
			"retries and failover included.",
		Flags:  flags,
		Action: benchAction,
	}
}

// ---- configuration ----

// benchMix is the weight of each kind of operation.
type benchMix [numKinds]int

// parseMix reads "limit:70,market:20,cancel:10". Kinds left out weigh 0.
func parseMix(s string) (benchMix, error) {
	var m benchMix
	seen := map[string]bool{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, ok := strings.Cut(part, ":")
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok {
			return m, fmt.Errorf("%q is not KIND:WEIGHT", part)
		}
		k := -1
		for i, n := range kindNames {
			if n == name {
				k = i
			}
		}
		if k < 0 {
			return m, fmt.Errorf("unknown kind %q (kinds: %s)", name, strings.Join(kindNames[:], ", "))
		}
		if seen[name] {
			return m, fmt.Errorf("kind %q given twice", name)
		}
		seen[name] = true
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 || n > 1_000_000 {
			return m, fmt.Errorf("weight of %s must be a whole number from 0 to 1000000, got %q", name, w)
		}
		m[k] = n
		total += n
	}
	if total == 0 {
		return m, errors.New("no operation has a positive weight")
	}
	return m, nil
}

func (m benchMix) String() string {
	var parts []string
	for k, w := range m {
		if w > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", kindNames[k], w))
		}
	}
	return strings.Join(parts, ",")
}

// pick maps a uniform draw in [0, total) to a kind.
func (m benchMix) pick(r int) benchKind {
	for k, w := range m {
		if r < w {
			return benchKind(k)
		}
		r -= w
	}
	return kindLimit
}

func (m benchMix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

// benchConfig is the validated command line.
type benchConfig struct {
	clients  int
	traders  int
	duration time.Duration // 0: no time bound (then orders > 0)
	orders   int64         // 0: no count bound
	symbols  []string
	mix      benchMix
	rate     float64
	histPath string
	stream   bool          // orders and cancels over order streams
	ndjson   bool          // ... in the NDJSON encoding
	pipeline int           // clients per order stream
	opWait   time.Duration // bound on one stream round trip (--timeout)
	via      string        // benchViaAssigned, benchViaLeader or benchViaFollowers
}

// --via: which Trading Server the clients talk to.
const (
	benchViaAssigned  = "assigned"
	benchViaLeader    = "leader"
	benchViaFollowers = "followers"
)

func benchConfigFrom(cCtx *cli.Context) (*benchConfig, error) {
	cfg := &benchConfig{
		clients: cCtx.Int("clients"), traders: cCtx.Int("traders"), duration: cCtx.Duration("duration"),
		orders: int64(cCtx.Int("orders")), rate: cCtx.Float64("rate"), histPath: cCtx.String("histogram"),
		stream: cCtx.Bool("stream"), ndjson: cCtx.Bool("ndjson"), pipeline: cCtx.Int("pipeline"), opWait: cCtx.Duration("timeout"),
		via: cCtx.String("via"),
	}
	switch cfg.via {
	case benchViaAssigned, benchViaLeader, benchViaFollowers:
	default:
		return nil, usageErrorf(cCtx, "--via: must be %s, %s or %s, got %q", benchViaAssigned, benchViaLeader, benchViaFollowers, cfg.via)
	}
	if cfg.pipeline < 1 || cfg.pipeline > maxPipeline {
		return nil, usageErrorf(cCtx, "--pipeline: must be between 1 and %d, got %d", maxPipeline, cfg.pipeline)
	}
	if cfg.ndjson && !cfg.stream {
		return nil, usageErrorf(cCtx, "--ndjson: needs --stream (it picks the order stream's encoding)")
	}
	if cfg.pipeline > 1 && !cfg.stream {
		return nil, usageErrorf(cCtx, "--pipeline: needs --stream (plain HTTP requests are not pipelined)")
	}
	if cfg.clients < 1 || cfg.clients > benchMaxClients {
		return nil, usageErrorf(cCtx, "--clients: must be between 1 and %d, got %d", benchMaxClients, cfg.clients)
	}
	if cfg.traders == 0 {
		cfg.traders = min(cfg.clients, 32)
	}
	if cfg.traders < 1 || cfg.traders > min(cfg.clients, benchMaxTraders) {
		return nil, usageErrorf(cCtx, "--traders: must be between 1 and %d (and at most --clients), got %d", min(cfg.clients, benchMaxTraders), cfg.traders)
	}
	if cfg.orders < 0 {
		return nil, usageErrorf(cCtx, "--orders: must not be negative, got %d", cfg.orders)
	}
	if cfg.orders > 0 && !cCtx.IsSet("duration") {
		cfg.duration = 0 // --orders alone: the count is the bound
	}
	if cfg.orders == 0 && cfg.duration <= 0 {
		return nil, usageErrorf(cCtx, "--duration: must be positive, got %s", cfg.duration)
	}
	if cfg.duration < 0 {
		return nil, usageErrorf(cCtx, "--duration: must not be negative, got %s", cfg.duration)
	}
	if cfg.rate < 0 || math.IsNaN(cfg.rate) || math.IsInf(cfg.rate, 0) {
		return nil, usageErrorf(cCtx, "--rate: must be 0 (closed loop) or a positive number, got %v", cfg.rate)
	}
	for _, s := range splitList(cCtx.String("symbols")) {
		sym, err := transport.NormalizeSymbol(s)
		if err != nil {
			return nil, usageErrorf(cCtx, "--symbols: %v", err)
		}
		if !slices.Contains(cfg.symbols, sym) {
			cfg.symbols = append(cfg.symbols, sym)
		}
	}
	if len(cfg.symbols) == 0 {
		return nil, usageErrorf(cCtx, "--symbols: name at least one symbol")
	}
	mix, err := parseMix(cCtx.String("mix"))
	if err != nil {
		return nil, usageErrorf(cCtx, "--mix: %v", err)
	}
	cfg.mix = mix
	if cfg.histPath != "" {
		if _, err := histFormat(cfg.histPath); err != nil {
			return nil, usageErrorf(cCtx, "--histogram: %v", err)
		}
	}
	return cfg, nil
}

// ---- latency histogram ----

// Log-linear buckets: values below 128 ns have a bucket each; above, each
// power of two is split in 64, so a bucket is at most 1/64 (1.6%) wide
// relative to its values.
const (
	histSubBits  = 7
	histSub      = 1 << histSubBits // 128
	histHalf     = histSub / 2      // 64
	histBuckets  = histSub + (37-histSubBits+1)*histHalf
	histMinShift = 1
)

func histBucket(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > benchHistMaxNanos {
		v = benchHistMaxNanos
	}
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits
	return histSub + (shift-histMinShift)*histHalf + int(v>>shift) - histHalf
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	k := i - histSub
	shift := k/histHalf + histMinShift
	m := int64(k%histHalf + histHalf)
	return m << shift, (m+1)<<shift - 1
}

// latHist is a latency histogram with exact count, sum, min and max.
type latHist struct {
	counts   []uint64
	n        uint64
	sum      int64
	min, max int64
}

func newLatHist() *latHist { return &latHist{counts: make([]uint64, histBuckets)} }

func (h *latHist) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[histBucket(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

func (h *latHist) merge(o *latHist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the q-quantile (0 < q ≤ 1): the value with rank
// ceil(q·n), estimated as the middle of its bucket and kept within the
// observed min and max. q = 1 is the exact maximum.
func (h *latHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank >= h.n {
		return time.Duration(h.max)
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *latHist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / int64(h.n))
}

// ---- the run ----

// benchTrader is one registered trader and what the run did to it.
type benchTrader struct {
	name      string
	password  string
	token     string
	accountID uint64
	node      string
	nodeAddr  string

	// After funding, before the load.
	cashBefore   trader.Cents
	sharesBefore map[string]int64
	seqBefore    uint64

	deposited      atomic.Int64 // cents of acknowledged "deposit" operations
	depositUnknown atomic.Int64 // cents of deposits whose outcome stayed unknown

	mu        sync.Mutex
	ackFilled map[uint64]int64 // order ID → shares filled when acknowledged
}

func (t *benchTrader) noteFilled(id uint64, qty int64) {
	if qty <= 0 {
		return
	}
	t.mu.Lock()
	if len(t.ackFilled) < benchMaxTracked {
		t.ackFilled[id] = max(t.ackFilled[id], qty)
	}
	t.mu.Unlock()
}

// benchWorker is one client: its connection, its random source and its
// tallies (merged at the end, so the hot path shares nothing but two
// counters).
type benchWorker struct {
	id     int
	cl     *transport.Client
	stream *sharedStream // with --stream; shared by --pipeline clients
	tr     *benchTrader
	rng    *rand.Rand
	open   []uint64 // the client's orders still open when acknowledged
	hists  [numKinds]*latHist
	ok     [numKinds]int64
	fail   [numKinds]int64
	errs   map[string]int64
	out    map[benchOutcome]int64 // outcomes: filled, partially_filled, resting, ...
	// deadlines bound operations by --timeout (shared contexts: see
	// transport.SharedDeadlines); set while the worker runs.
	deadlines *transport.SharedDeadlines
}

// benchOutcome names an outcome tally (kind/outcome in the report).
type benchOutcome struct {
	kind    benchKind
	outcome string
}

// opCtxStep is how close together operations start to share a deadline.
const opCtxStep = 100 * time.Millisecond

// run runs operations until next says stop (ok false); next gives each
// operation's kind and the moment it was due.
func (w *benchWorker) run(ctx context.Context, r *benchRun, next func() (benchKind, time.Time, bool)) {
	w.deadlines = &transport.SharedDeadlines{Parent: ctx, Timeout: r.cfg.opWait, Step: min(opCtxStep, r.cfg.opWait/2)}
	defer w.deadlines.Release()
	for {
		k, due, ok := next()
		if !ok {
			return
		}
		w.op(ctx, r, k, due)
	}
}

// benchRun is the shared state of one run.
type benchRun struct {
	cfg   *benchConfig
	runID string
	refs  map[string]int64 // symbol → reference price in cents
	start time.Time
	done  atomic.Int64 // operations finished
	// streamsOpened counts order streams opened (with --stream); more
	// than the streams in use means some broke and were reopened.
	streamsOpened atomic.Int64
	// streamsNDJSON counts those that speak NDJSON (asked for, or a node
	// that predates the binary encoding answered in it).
	streamsNDJSON atomic.Int64
	// streamsAtLeader counts those whose node named itself the leader.
	streamsAtLeader atomic.Int64
	errored         atomic.Int64

	lastAck atomic.Int64 // unix nanoseconds of the latest acknowledgement
	gapMu   sync.Mutex
	gapMax  time.Duration
	gapAt   time.Duration // offset from start where the longest gap began
}

// noteAck tracks the longest interval without any acknowledgement.
func (r *benchRun) noteAck(now time.Time) {
	ns := now.UnixNano()
	prev := r.lastAck.Swap(ns)
	if prev == 0 || ns <= prev {
		return
	}
	gap := time.Duration(ns - prev)
	r.gapMu.Lock()
	if gap > r.gapMax {
		r.gapMax, r.gapAt = gap, time.Unix(0, prev).Sub(r.start)
	}
	r.gapMu.Unlock()
}

// errorKind names an error for the "errors by kind" table.
func errorKind(err error) string {
	var rej *transport.OrderRejectedError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &rej):
		return "rejected:" + rej.Err.Code
	case errors.Is(err, transport.ErrOutcomeUnknown):
		return transport.CodeOutcomeUnknown
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, transport.ErrNoNodes):
		return "no_reachable_node"
	}
	if code := transport.ErrorCode(err); code != "" {
		return code
	}
	if errors.Is(err, transport.ErrUnavailable) {
		return transport.CodeUnavailable // e.g. an order stream that broke
	}
	return "other"
}

// limitPrice draws a limit price within ±benchPriceBandBps of ref.
func limitPrice(rng *rand.Rand, ref int64) int64 {
	bps := int64(rng.IntN(2*benchPriceBandBps+1)) - benchPriceBandBps
	return max(1, ref+ref*bps/10_000)
}

// op runs one operation and records it.
func (w *benchWorker) op(ctx context.Context, r *benchRun, k benchKind, due time.Time) {
	var err error
	outcome := ""
	if k == kindCancel && len(w.open) == 0 {
		k = kindLimit // nothing to cancel yet: place an order instead
	}
	switch k {
	case kindLimit, kindMarket:
		sym := r.cfg.symbols[w.rng.IntN(len(r.cfg.symbols))]
		req := transport.OrderRequest{
			ClientID: transport.NewClientID(), Symbol: sym, Side: "buy", Quantity: int64(1 + w.rng.IntN(benchMaxQty)),
		}
		if w.rng.IntN(2) == 1 {
			req.Side = "sell"
		}
		if k == kindLimit {
			req.Type = "limit"
			req.LimitPrice = market.FormatPrice(limitPrice(w.rng, r.refs[sym]))
		} else {
			req.Type = "market"
		}
		var o *transport.Order
		if r.cfg.stream {
			o, err = w.streamCall(ctx, r, func(ctx context.Context, s *transport.OrderStream) (*transport.Order, error) {
				return s.Place(ctx, req)
			})
		} else {
			o, err = w.cl.PlaceOrder(ctx, req)
		}
		if err == nil {
			w.tr.noteFilled(o.OrderID, o.FilledQuantity)
			switch {
			case o.Status == transport.StatusRejected:
				err = &transport.OrderRejectedError{Order: o, Err: &transport.APIError{Code: o.RejectCode, Message: o.Reason}}
			case o.Active():
				outcome = "resting"
				if o.FilledQuantity > 0 {
					outcome = "partially_filled_resting"
				}
				w.remember(o.OrderID)
			case o.Status == transport.StatusFilled:
				outcome = "filled"
			default:
				outcome = "unfilled_" + o.Status // an IOC market order with nothing (more) to take
				if o.FilledQuantity > 0 {
					outcome = "partially_filled_" + o.Status
				}
			}
		}
	case kindCancel:
		i := len(w.open) - 1 - w.rng.IntN(min(len(w.open), 8)) // mostly recent ones
		id := w.open[i]
		w.open = append(w.open[:i], w.open[i+1:]...)
		var o *transport.Order
		if r.cfg.stream {
			o, err = w.streamCall(ctx, r, func(ctx context.Context, s *transport.OrderStream) (*transport.Order, error) {
				return s.Cancel(ctx, id)
			})
		} else {
			o, err = w.cl.Cancel(ctx, id)
		}
		switch {
		case err == nil:
			outcome = "cancelled"
			w.tr.noteFilled(o.OrderID, o.FilledQuantity)
		case transport.ErrorCode(err) == transport.CodeOrderNotOpen:
			err, outcome = nil, "cancel_too_late" // filled meanwhile: a definite answer
		}
	case kindDeposit:
		_, err = w.cl.Deposit(ctx, trader.Cents(benchDepositCents).String(), "")
		switch {
		case err == nil:
			w.tr.deposited.Add(benchDepositCents)
		case errors.Is(err, transport.ErrOutcomeUnknown):
			w.tr.depositUnknown.Add(benchDepositCents)
		}
	}
	now := time.Now()
	w.hists[k].record(now.Sub(due))
	r.done.Add(1)
	if err != nil {
		w.fail[k]++
		w.errs[errorKind(err)]++
		r.errored.Add(1)
		return
	}
	w.ok[k]++
	if outcome != "" {
		w.out[benchOutcome{k, outcome}]++
	}
	r.noteAck(now)
}

// sharedStream is one order stream used by --pipeline clients of the same
// trader; it is opened on first use and reopened after it breaks.
type sharedStream struct {
	cl     *transport.Client
	ndjson bool          // open NDJSON streams, not binary ones
	opened *atomic.Int64 // streams opened in the run, reopenings included
	// openedNDJSON counts the opened streams that speak NDJSON.
	openedNDJSON *atomic.Int64
	atLeader     *atomic.Int64 // streams opened at the leader
	// relocate: a stream that did not open at the leader (one opened while
	// the cluster was electing a new one, say) is replaced by a new one,
	// at most once per relocateEvery, as a program would, since the
	// follower forwards every order to the leader. The new one is opened
	// while the clients go on using the old one.
	relocate   bool
	mu         sync.Mutex
	s          *transport.OrderStream
	openedAt   time.Time      // when s was opened, or a relocation last tried
	relocating bool           // a relocation's open is under way
	draining   sync.WaitGroup // replaced streams answering what they carry
}

const relocateEvery = time.Second

// get returns the open stream, opening it first if need be (bounded by
// the client's dial and response-header timeouts).
func (ss *sharedStream) get(ctx context.Context) (*transport.OrderStream, error) {
	ss.mu.Lock()
	if cur := ss.s; cur != nil {
		if !ss.relocate || cur.AtLeader() || ss.relocating || time.Since(ss.openedAt) < relocateEvery {
			ss.mu.Unlock()
			return cur, nil
		}
		ss.relocating = true
		ss.mu.Unlock()
		s, err := ss.open(ctx)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.relocating, ss.openedAt = false, time.Now()
		switch {
		case err != nil: // keep the stream there is
		case ss.s == cur:
			ss.s = s
			ss.retire(cur) // what was sent on it is answered there
		case ss.s == nil: // cur broke meanwhile and was dropped
			ss.s = s
		default: // cur broke and another client opened a stream already
			ss.retire(s)
		}
		if ss.s == nil {
			return nil, err
		}
		return ss.s, nil
	}
	defer ss.mu.Unlock()
	s, err := ss.open(ctx)
	if err != nil {
		return nil, err
	}
	ss.s, ss.openedAt = s, time.Now()
	return s, nil
}

// open opens a stream and counts it.
func (ss *sharedStream) open(ctx context.Context) (*transport.OrderStream, error) {
	open := ss.cl.OpenOrderStream
	if ss.ndjson {
		open = ss.cl.OpenOrderStreamNDJSON
	}
	s, err := open(ctx)
	if err != nil {
		return nil, err
	}
	ss.opened.Add(1)
	if !s.Binary() {
		ss.openedNDJSON.Add(1)
	}
	if s.AtLeader() {
		ss.atLeader.Add(1)
	}
	return s, nil
}

// retire closes a stream no longer handed out, in the background, once
// its answers are in. Callers hold mu.
func (ss *sharedStream) retire(s *transport.OrderStream) {
	ss.draining.Add(1)
	go func() {
		defer ss.draining.Done()
		_ = s.Close()
	}()
}

// drop aborts s if it is still the current stream: its connection broke
// or hung, so there is nothing to wait for (Abort also makes the client
// forget s's node as the leader).
func (ss *sharedStream) drop(s *transport.OrderStream) {
	ss.mu.Lock()
	if ss.s != s || s == nil {
		ss.mu.Unlock()
		return
	}
	ss.s = nil
	ss.mu.Unlock()
	s.Abort()
}

// closeCurrent closes the stream if one is open, once its answers are in,
// and waits (not long) for it and the streams it replaced.
func (ss *sharedStream) closeCurrent() {
	ss.mu.Lock()
	if ss.s != nil {
		ss.retire(ss.s)
		ss.s = nil
	}
	ss.mu.Unlock()
	done := make(chan struct{})
	go func() {
		ss.draining.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// streamCall runs one order-stream round trip on the client's stream,
// bounded by --timeout. When the stream breaks (its node died or hung),
// the request is sent again on a fresh stream, perhaps to another node,
// and when the node answers outcome_unknown it is sent again on the same
// stream, as a program would: a place carries its client order ID, so a repeat
// returns the first order instead of placing another, and a repeated
// cancel finds the order no longer open.
func (w *benchWorker) streamCall(ctx context.Context, r *benchRun, call func(context.Context, *transport.OrderStream) (*transport.Order, error)) (*transport.Order, error) {
	cctx := w.deadlines.Get(time.Now())
	backoff := 5 * time.Millisecond
	for {
		s, err := w.stream.get(ctx) // the stream outlives this operation: not cctx
		var o *transport.Order
		if err == nil {
			o, err = call(cctx, s)
			switch {
			case err == nil:
				return o, nil
			case streamBroke(err):
				w.stream.drop(s) // the connection broke (or hung): start afresh
			case transport.ErrorCode(err) != transport.CodeOutcomeUnknown:
				return o, err // a definite answer
			}
			// The node lost track of it (say its leader died with the
			// command in flight): resend, as the client ID allows.
		}
		select {
		case <-cctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// streamBroke reports an error of the stream itself rather than an answer
// from the server.
func streamBroke(err error) bool {
	return (errors.Is(err, transport.ErrOutcomeUnknown) || errors.Is(err, transport.ErrUnavailable)) && transport.ErrorCode(err) == ""
}

func (w *benchWorker) remember(id uint64) {
	if len(w.open) >= benchOpenRing {
		w.open = append(w.open[:0], w.open[1:]...)
	}
	w.open = append(w.open, id)
}

// runLoad drives the workers until the time or count bound and waits for
// the operations in flight.
func runLoad(ctx context.Context, r *benchRun, workers []*benchWorker) time.Duration {
	cfg := r.cfg
	var end time.Time
	if cfg.duration > 0 {
		end = r.start.Add(cfg.duration)
	}
	var issued atomic.Int64
	claim := func() bool {
		if ctx.Err() != nil || (!end.IsZero() && !time.Now().Before(end)) {
			return false
		}
		return cfg.orders == 0 || issued.Add(1) <= cfg.orders
	}
	total := cfg.mix.total()
	var wg sync.WaitGroup
	if cfg.rate == 0 {
		for _, w := range workers {
			wg.Add(1)
			go func(w *benchWorker) {
				defer wg.Done()
				w.run(ctx, r, func() (benchKind, time.Time, bool) {
					if !claim() {
						return 0, time.Time{}, false
					}
					return cfg.mix.pick(w.rng.IntN(total)), time.Now(), true
				})
			}(w)
		}
	} else {
		// Open loop: operation k is due at start + k/rate, whether or not a
		// client is free then; latency counts from that moment.
		tickets := make(chan time.Time, 4*len(workers))
		go func() {
			defer close(tickets)
			interval := float64(time.Second) / cfg.rate
			timer := time.NewTimer(0)
			defer timer.Stop()
			for k := int64(0); ; k++ {
				due := r.start.Add(time.Duration(float64(k) * interval))
				if (!end.IsZero() && !due.Before(end)) || (cfg.orders > 0 && k >= cfg.orders) {
					return
				}
				if d := time.Until(due); d > 0 {
					timer.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				select {
				case <-ctx.Done():
					return
				case tickets <- due:
				}
			}
		}()
		for _, w := range workers {
			wg.Add(1)
			go func(w *benchWorker) {
				defer wg.Done()
				w.run(ctx, r, func() (benchKind, time.Time, bool) {
					for due := range tickets {
						if ctx.Err() == nil {
							return cfg.mix.pick(w.rng.IntN(total)), due, true
						}
						// drain
					}
					return 0, time.Time{}, false
				})
			}(w)
		}
	}
	wg.Wait()
	return time.Since(r.start)
}

// progress prints a live line on stderr until stop is closed.
func progress(w io.Writer, r *benchRun, stop <-chan struct{}, finished chan<- struct{}) {
	defer close(finished)
	t := time.NewTicker(benchProgressEvery)
	defer t.Stop()
	lastN, lastT := int64(0), r.start
	for {
		select {
		case <-stop:
			fmt.Fprint(w, "\r\x1b[2K")
			return
		case now := <-t.C:
			n := r.done.Load()
			rate := float64(n-lastN) / now.Sub(lastT).Seconds()
			lastN, lastT = n, now
			bound := ""
			if r.cfg.duration > 0 {
				bound = "/" + r.cfg.duration.String()
			}
			if r.cfg.orders > 0 {
				bound += fmt.Sprintf(" (%d of %d)", n, r.cfg.orders)
			}
			fmt.Fprintf(w, "\r\x1b[2K%6.1fs%s  %s ops  %s ops/s now  %s ops/s overall  errors %s",
				now.Sub(r.start).Seconds(), bound, commas(n), commas(int64(rate)),
				commas(int64(float64(n)/now.Sub(r.start).Seconds())), commas(r.errored.Load()))
		}
	}
}

// commas formats an integer with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// ---- the report ----

// benchLatency is a latency summary in milliseconds.
type benchLatency struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func summarize(h *latHist) benchLatency {
	return benchLatency{
		Count: h.n, Min: ms(time.Duration(h.min)), P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(time.Duration(h.max)), Mean: ms(h.mean()),
	}
}

type benchKindReport struct {
	OK      int64        `json:"ok"`
	Errors  int64        `json:"errors"`
	Latency benchLatency `json:"latency"`
}

type benchConservation struct {
	OK       bool     `json:"ok"`
	Traders  int      `json:"traders"`
	Entries  int      `json:"statement_entries"`
	Buys     int64    `json:"buy_entries"`
	Sells    int64    `json:"sell_entries"`
	Problems []string `json:"problems,omitempty"`
	Skipped  string   `json:"skipped,omitempty"`
}

// benchReport is everything `hats bench --json` prints.
type benchReport struct {
	RunID       string   `json:"run_id"`
	Started     string   `json:"started"`
	Cluster     []string `json:"cluster"`
	Clients     int      `json:"clients"`
	Traders     int      `json:"traders"`
	Symbols     []string `json:"symbols"`
	Mix         string   `json:"mix"`
	Mode        string   `json:"mode"` // closed or open loop
	Via         string   `json:"via"`  // which Trading Servers the clients used
	Rate        float64  `json:"rate,omitempty"`
	Streams     int      `json:"order_streams,omitempty"`        // with --stream: connections carrying the orders
	Encoding    string   `json:"stream_encoding,omitempty"`      // with --stream: what the streams spoke: binary, ndjson or mixed
	Opened      int64    `json:"order_streams_opened,omitempty"` // streams opened, reopenings after breaks included
	AtLeader    int64    `json:"order_streams_at_leader"`        // of those, opened at the leader (the rest forward through a follower)
	DurationSet float64  `json:"duration_limit_s,omitempty"`
	OrdersSet   int64    `json:"orders_limit,omitempty"`

	ElapsedS        float64                    `json:"elapsed_s"`
	Operations      int64                      `json:"operations"`
	Acknowledged    int64                      `json:"acknowledged"`
	Errors          int64                      `json:"errors"`
	OpsPerSec       float64                    `json:"ops_per_s"` // acknowledged operations per second
	OrdersPerSec    float64                    `json:"orders_per_s"`
	Latency         benchLatency               `json:"latency"`
	ByKind          map[string]benchKindReport `json:"by_kind"`
	ErrorsByKind    map[string]int64           `json:"errors_by_kind"`
	Outcomes        map[string]int64           `json:"outcomes"`
	LongestGapMs    float64                    `json:"longest_gap_ms"`
	LongestGapAtS   float64                    `json:"longest_gap_at_s"`
	LongestGapAt    string                     `json:"longest_gap_at,omitempty"` // wall-clock start of the longest gap (UTC, RFC 3339 with ms), to match against node logs
	LeaderBefore    string                     `json:"leader_before,omitempty"`
	LeaderAfter     string                     `json:"leader_after,omitempty"`
	TermBefore      uint64                     `json:"term_before,omitempty"`
	TermAfter       uint64                     `json:"term_after,omitempty"`
	Conservation    benchConservation          `json:"conservation"`
	HistogramFile   string                     `json:"histogram_file,omitempty"`
	histogram       *latHist
	histogramByKind [numKinds]*latHist
}

func buildReport(r *benchRun, workers []*benchWorker, elapsed time.Duration) *benchReport {
	rep := &benchReport{
		RunID: r.runID, Started: r.start.UTC().Format(time.RFC3339), Clients: r.cfg.clients, Traders: r.cfg.traders,
		Symbols: r.cfg.symbols, Mix: r.cfg.mix.String(), Mode: "closed", Via: r.cfg.via, ElapsedS: math.Round(elapsed.Seconds()*1000) / 1000,
		DurationSet: r.cfg.duration.Seconds(), OrdersSet: r.cfg.orders,
		ByKind: map[string]benchKindReport{}, ErrorsByKind: map[string]int64{}, Outcomes: map[string]int64{},
		histogram: newLatHist(),
	}
	if r.cfg.rate > 0 {
		rep.Mode, rep.Rate = "open", r.cfg.rate
	}
	if r.cfg.stream {
		rep.Streams = (r.cfg.clients + r.cfg.pipeline - 1) / r.cfg.pipeline
		rep.Opened = r.streamsOpened.Load()
		rep.AtLeader = r.streamsAtLeader.Load()
		switch n := r.streamsNDJSON.Load(); {
		case n == 0:
			rep.Encoding = "binary"
		case n == rep.Opened:
			rep.Encoding = "ndjson"
		default: // some nodes predate the binary encoding
			rep.Encoding = "mixed"
		}
	}
	var orders int64
	for k := benchKind(0); k < numKinds; k++ {
		h := newLatHist()
		var ok, fail int64
		for _, w := range workers {
			h.merge(w.hists[k])
			ok += w.ok[k]
			fail += w.fail[k]
		}
		rep.histogramByKind[k] = h
		rep.histogram.merge(h)
		rep.Acknowledged += ok
		rep.Errors += fail
		if k == kindLimit || k == kindMarket {
			orders += ok
		}
		if ok+fail > 0 {
			rep.ByKind[k.String()] = benchKindReport{OK: ok, Errors: fail, Latency: summarize(h)}
		}
	}
	for _, w := range workers {
		for e, n := range w.errs {
			rep.ErrorsByKind[e] += n
		}
		for o, n := range w.out {
			rep.Outcomes[o.kind.String()+"/"+o.outcome] += n
		}
	}
	rep.Operations = rep.Acknowledged + rep.Errors
	if s := elapsed.Seconds(); s > 0 {
		rep.OpsPerSec = math.Round(float64(rep.Acknowledged)/s*10) / 10
		rep.OrdersPerSec = math.Round(float64(orders)/s*10) / 10
	}
	rep.Latency = summarize(rep.histogram)
	r.gapMu.Lock()
	rep.LongestGapMs, rep.LongestGapAtS = ms(r.gapMax), math.Round(r.gapAt.Seconds()*1000)/1000
	if r.gapMax > 0 {
		rep.LongestGapAt = r.start.Add(r.gapAt).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	r.gapMu.Unlock()
	return rep
}

func printBenchReport(w io.Writer, rep *benchReport) {
	mode := "closed loop"
	if rep.Mode == "open" {
		mode = fmt.Sprintf("open loop at %s ops/s", strconv.FormatFloat(rep.Rate, 'f', -1, 64))
	}
	if rep.Streams > 0 {
		mode += fmt.Sprintf(", %d %s order streams, %d opened, %d at the leader", rep.Streams, rep.Encoding, rep.Opened, rep.AtLeader)
	}
	if rep.Via != "" && rep.Via != benchViaAssigned {
		mode += ", via the " + rep.Via
	}
	fmt.Fprintf(w, "hats bench run %s: %d clients (%s), %d traders, symbols %s, mix %s\n",
		rep.RunID, rep.Clients, mode, rep.Traders, strings.Join(rep.Symbols, ","), rep.Mix)
	fmt.Fprintf(w, "cluster %s\n\n", strings.Join(rep.Cluster, ","))
	kv := []string{
		"operations", fmt.Sprintf("%s in %.2f s: %s acknowledged, %s errors", commas(rep.Operations), rep.ElapsedS, commas(rep.Acknowledged), commas(rep.Errors)),
		"throughput", fmt.Sprintf("%s ops/s acknowledged (orders %s/s)", commas(int64(rep.OpsPerSec)), commas(int64(rep.OrdersPerSec))),
		"latency ms", fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f",
			rep.Latency.P50, rep.Latency.P90, rep.Latency.P99, rep.Latency.P999, rep.Latency.Max, rep.Latency.Mean),
		"longest gap", fmt.Sprintf("%.3f ms without an acknowledgement (from %.3f s%s)", rep.LongestGapMs, rep.LongestGapAtS, gapClock(rep.LongestGapAt)),
	}
	if rep.LeaderBefore != "" || rep.LeaderAfter != "" {
		note := ""
		if rep.TermBefore != rep.TermAfter || rep.LeaderBefore != rep.LeaderAfter {
			note = "  (an election happened during the run)"
		}
		kv = append(kv, "leader", fmt.Sprintf("%s (term %d) before, %s (term %d) after%s",
			dash(rep.LeaderBefore), rep.TermBefore, dash(rep.LeaderAfter), rep.TermAfter, note))
	}
	if rep.HistogramFile != "" {
		kv = append(kv, "histogram", rep.HistogramFile)
	}
	printKV(w, kv...)

	fmt.Fprintln(w)
	var rows [][]string
	for k := benchKind(0); k < numKinds; k++ {
		kr, ok := rep.ByKind[k.String()]
		if !ok {
			continue
		}
		l := kr.Latency
		rows = append(rows, []string{k.String(), commas(kr.OK), commas(kr.Errors),
			fmt.Sprintf("%.3f", l.P50), fmt.Sprintf("%.3f", l.P90), fmt.Sprintf("%.3f", l.P99), fmt.Sprintf("%.3f", l.P999), fmt.Sprintf("%.3f", l.Max)})
	}
	table(w, []string{"KIND", "OK", "ERRORS", "P50 MS", "P90 MS", "P99 MS", "P99.9 MS", "MAX MS"}, rows)

	if len(rep.Outcomes) > 0 {
		fmt.Fprintln(w)
		rows = rows[:0]
		for _, o := range sortedKeys(rep.Outcomes) {
			rows = append(rows, []string{o, commas(rep.Outcomes[o])})
		}
		table(w, []string{"OUTCOME", "COUNT"}, rows)
	}
	if len(rep.ErrorsByKind) > 0 {
		fmt.Fprintln(w)
		rows = rows[:0]
		for _, e := range sortedKeys(rep.ErrorsByKind) {
			rows = append(rows, []string{e, commas(rep.ErrorsByKind[e])})
		}
		table(w, []string{"ERROR", "COUNT"}, rows)
	}
	fmt.Fprintln(w)
	c := rep.Conservation
	switch {
	case c.Skipped != "":
		fmt.Fprintf(w, "conservation  skipped: %s\n", c.Skipped)
	case c.OK:
		fmt.Fprintf(w, "conservation  ok: %d traders, %s statement entries (%s buys, %s sells): cash and shares reconcile, nothing negative\n",
			c.Traders, commas(int64(c.Entries)), commas(c.Buys), commas(c.Sells))
	default:
		fmt.Fprintf(w, "conservation  FAILED: %d problem(s)\n", len(c.Problems))
		for _, p := range c.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- setup and the conservation check ----

// newRunID is six random hex digits (the tail of a key: its head is the
// time).
func newRunID() string { return transport.NewIdempotencyKey()[26:] }

// setupTraders registers, logs in and funds every trader, a few at a time.
func setupTraders(ctx context.Context, newClient func(token string) (*transport.Client, error), runID string, symbols []string, n int) ([]*benchTrader, error) {
	traders := make([]*benchTrader, n)
	errs := make([]error, n)
	sem := make(chan struct{}, benchSetupParallel)
	var wg sync.WaitGroup
	for i := range traders {
		t := &benchTrader{
			name:      fmt.Sprintf("bench-%s-%03d", runID, i),
			password:  "pw-" + transport.NewIdempotencyKey(),
			ackFilled: map[uint64]int64{}, sharesBefore: map[string]int64{},
		}
		traders[i] = t
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = setupTrader(ctx, newClient, t, symbols)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("set up trader %s: %w", traders[i].name, err)
		}
	}
	return traders, nil
}

// pinTraders points every trader's clients at the leader or at the
// followers (round robin) instead of the Trading Server the LDS assigned,
// for measuring one path at a time. Sessions are valid on every node.
func pinTraders(ctx context.Context, setup *transport.Client, via string, traders []*benchTrader) error {
	if via == benchViaAssigned {
		return nil
	}
	st, err := setup.ClusterStatus(ctx)
	if err != nil {
		return fmt.Errorf("--via %s: cluster status: %w", via, err)
	}
	if st.Leader == "" {
		return fmt.Errorf("--via %s: the cluster has no leader right now", via)
	}
	var pick []transport.NodeStatus
	for _, n := range st.Nodes {
		if n.HTTPAddr != "" && n.Error == "" && n.Voter && (n.ID == st.Leader) == (via == benchViaLeader) {
			pick = append(pick, n)
		}
	}
	if len(pick) == 0 {
		return fmt.Errorf("--via %s: no such node in the cluster status (leader %q)", via, st.Leader)
	}
	for i, t := range traders {
		n := pick[i%len(pick)]
		t.node, t.nodeAddr = n.ID, n.HTTPAddr
	}
	return nil
}

func setupTrader(ctx context.Context, newClient func(string) (*transport.Client, error), t *benchTrader, symbols []string) error {
	cl, err := newClient("")
	if err != nil {
		return err
	}
	if _, err := cl.Register(ctx, transport.RegisterRequest{Username: t.name, Password: t.password, Name: "hats bench"}); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	lr, err := cl.Login(ctx, t.name, t.password)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	t.token, t.accountID, t.node, t.nodeAddr = lr.Token, lr.Account.AccountID, lr.Node, lr.NodeAddr
	if _, err := cl.Deposit(ctx, trader.Cents(benchCash).String(), ""); err != nil {
		return fmt.Errorf("deposit: %w", err)
	}
	for _, sym := range symbols {
		if _, err := cl.DepositShares(ctx, sym, benchShares, ""); err != nil {
			return fmt.Errorf("deposit shares of %s: %w", sym, err)
		}
	}
	pf, err := cl.Portfolio(ctx, transport.Linearizable)
	if err != nil {
		return fmt.Errorf("portfolio: %w", err)
	}
	if t.cashBefore, err = trader.ParseCents(pf.Cash); err != nil {
		return fmt.Errorf("portfolio cash %q: %w", pf.Cash, err)
	}
	for _, p := range pf.Positions {
		t.sharesBefore[p.Symbol] = p.Quantity
	}
	// The statement's last sequence so far: the check reads what follows.
	act, err := readActivity(ctx, cl, 0)
	if err != nil {
		return fmt.Errorf("activity: %w", err)
	}
	if n := len(act.Entries); n > 0 {
		t.seqBefore = act.Entries[n-1].Seq
	}
	return nil
}

// readActivity reads every statement entry after seq, a bounded number of
// pages.
func readActivity(ctx context.Context, cl *transport.Client, after uint64) (*transport.Activity, error) {
	all := &transport.Activity{}
	for page := 0; page < benchMaxPages; page++ {
		p, err := cl.Activity(ctx, transport.ActivityQuery{After: after, Limit: transport.MaxActivity})
		if err != nil {
			return nil, err
		}
		all.Entries = append(all.Entries, p.Entries...)
		all.Cash = p.Cash
		if !p.More || len(p.Entries) == 0 {
			return all, nil
		}
		after = p.NextAfter
	}
	return nil, fmt.Errorf("statement longer than %d pages", benchMaxPages)
}

// traderCheck is what conservation found for one trader.
type traderCheck struct {
	entries     int
	buys, sells int64
	problems    []string
}

// checkTrader reconciles one trader: the statement after funding must run
// without gaps from the funded balances, add up to the final portfolio,
// contain exactly the acknowledged deposits (give or take those whose
// outcome stayed unknown) and every fill an acknowledgement reported, and
// nothing may be negative.
func checkTrader(t *benchTrader, entries []transport.ActivityEntry, pf *transport.Portfolio) traderCheck {
	var c traderCheck
	bad := func(format string, args ...any) {
		if len(c.problems) < 10 {
			c.problems = append(c.problems, t.name+": "+fmt.Sprintf(format, args...))
		}
	}
	cash := t.cashBefore
	shares := map[string]int64{}
	for s, q := range t.sharesBefore {
		shares[s] = q
	}
	var bought, sold, deposits trader.Cents
	filled := map[uint64]int64{}
	seq := t.seqBefore
	for _, e := range entries {
		c.entries++
		if e.Seq != seq+1 {
			bad("statement jumps from seq %d to %d", seq, e.Seq)
		}
		seq = e.Seq
		amt, err := trader.ParseCents(e.Amount)
		if err != nil {
			bad("entry %d: amount %q: %v", e.Seq, e.Amount, err)
			continue
		}
		cash += amt
		switch e.Kind {
		case "buy":
			c.buys++
			bought -= amt
			filled[e.OrderID] += e.Quantity
		case "sell":
			c.sells++
			sold += amt
			filled[e.OrderID] -= e.Quantity
		case "deposit":
			deposits += amt
		default:
			bad("entry %d: unexpected %s during the run", e.Seq, e.Kind)
		}
		if e.Symbol != "" {
			shares[e.Symbol] += e.Quantity
			if shares[e.Symbol] != e.ShareBalance {
				bad("entry %d: %s balance %d, but the movements add up to %d", e.Seq, e.Symbol, e.ShareBalance, shares[e.Symbol])
			}
		}
		if bal, err := trader.ParseCents(e.CashBalance); err != nil || bal != cash {
			bad("entry %d: cash balance %s, but the movements add up to %s", e.Seq, e.CashBalance, cash)
		}
		if cash < 0 {
			bad("entry %d: cash went negative (%s)", e.Seq, cash)
		}
	}
	// cash_after = cash_before − Σ buys + Σ sells + Σ deposits.
	if want := t.cashBefore - bought + sold + deposits; want != cash {
		bad("cash %s ≠ %s − bought %s + sold %s + deposited %s", cash, t.cashBefore, bought, sold, deposits)
	}
	final, err := trader.ParseCents(pf.Cash)
	if err != nil || final != cash {
		bad("portfolio cash %s, statement says %s", pf.Cash, cash)
	}
	if avail, err := trader.ParseCents(pf.AvailableCash); err != nil || avail < 0 || avail > final {
		bad("available cash %s out of range [0, %s]", pf.AvailableCash, pf.Cash)
	}
	held := map[string]bool{}
	for _, p := range pf.Positions {
		held[p.Symbol] = true
		if p.Quantity != shares[p.Symbol] {
			bad("%s: portfolio holds %d, funding %d plus statement movements make %d", p.Symbol, p.Quantity, t.sharesBefore[p.Symbol], shares[p.Symbol])
		}
		if p.Quantity < 0 || p.AvailableQuantity < 0 || p.AvailableQuantity > p.Quantity {
			bad("%s: quantity %d, available %d", p.Symbol, p.Quantity, p.AvailableQuantity)
		}
	}
	for s, q := range shares {
		if !held[s] && q != 0 {
			bad("%s: statement makes %d shares, the portfolio shows none", s, q)
		}
	}
	acked, unknown := trader.Cents(t.deposited.Load()), trader.Cents(t.depositUnknown.Load())
	if deposits < acked || deposits > acked+unknown {
		bad("statement holds %s of deposits, %s were acknowledged (%s unknown)", deposits, acked, unknown)
	}
	t.mu.Lock()
	for id, q := range t.ackFilled {
		if got := filled[id]; got < q {
			bad("order %d: acknowledged with %d shares filled, the statement shows %d", id, q, got)
		}
	}
	t.mu.Unlock()
	return c
}

// conserve runs the check for every trader.
func conserve(ctx context.Context, newClient func(string) (*transport.Client, error), traders []*benchTrader) benchConservation {
	res := benchConservation{Traders: len(traders)}
	for _, t := range traders {
		cl, err := newClient(t.token)
		if err != nil {
			res.Problems = append(res.Problems, err.Error())
			continue
		}
		cl.SetAssigned(t.node, t.nodeAddr)
		// The house market maker may still trade against resting orders:
		// read the statement, then the portfolio, then the statement again
		// until nothing moved in between.
		var entries []transport.ActivityEntry
		var pf *transport.Portfolio
		after, settled := t.seqBefore, false
		for try := 0; try < 10 && !settled; try++ {
			act, err := readActivity(ctx, cl, after)
			if err != nil {
				break
			}
			entries = append(entries, act.Entries...)
			after = lastSeq(entries, t.seqBefore)
			if pf != nil && len(act.Entries) == 0 {
				settled = true
				break
			}
			if pf, err = cl.Portfolio(ctx, transport.Linearizable); err != nil {
				break
			}
		}
		if !settled {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: could not read a settled statement and portfolio", t.name))
			continue
		}
		c := checkTrader(t, entries, pf)
		res.Entries += c.entries
		res.Buys += c.buys
		res.Sells += c.sells
		res.Problems = append(res.Problems, c.problems...)
	}
	res.OK = len(res.Problems) == 0
	return res
}

func lastSeq(e []transport.ActivityEntry, def uint64) uint64 {
	if len(e) == 0 {
		return def
	}
	return e[len(e)-1].Seq
}

// ---- histogram files ----

func histFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		return "png", nil
	case ".html", ".htm", "":
		return "html", nil
	}
	return "", fmt.Errorf("%q: name a .png or .html file", path)
}

// histBin is one bar of a drawn histogram: latencies in [lo, hi).
type histBin struct {
	lo, hi time.Duration
	n      uint64
}

// displayBins folds the fine buckets into at most nbins bars, equally wide
// on a logarithmic axis from the smallest to the largest latency.
func displayBins(h *latHist, nbins int) []histBin {
	if h.n == 0 || nbins < 1 {
		return nil
	}
	lo, hi := math.Max(float64(h.min), 1000), math.Max(float64(h.max), 1000) // at least 1 µs
	if hi <= lo*1.01 {
		return []histBin{{time.Duration(h.min), time.Duration(h.max) + 1, h.n}}
	}
	ratio := math.Log(hi / lo)
	bins := make([]histBin, nbins)
	for i := range bins {
		bins[i].lo = time.Duration(lo * math.Exp(ratio*float64(i)/float64(nbins)))
		bins[i].hi = time.Duration(lo * math.Exp(ratio*float64(i+1)/float64(nbins)))
	}
	bins[nbins-1].hi = time.Duration(hi) + 1
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		blo, bhi := histBounds(i)
		mid := math.Max(float64(blo+(bhi-blo)/2), lo)
		j := int(float64(nbins) * math.Log(mid/lo) / ratio)
		j = min(max(j, 0), nbins-1)
		bins[j].n += c
	}
	return bins
}

// writeHistogram writes the run's latency histogram to path.
func writeHistogram(path string, rep *benchReport) error {
	format, err := histFormat(path)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if format == "png" {
		err = histPNG(&buf, rep.histogram, 960, 480)
	} else {
		err = histHTML(&buf, rep)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func fmtMs(d time.Duration) string {
	v := float64(d) / 1e6
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// histHTML writes a self-contained page: an SVG bar chart on a log
// latency axis with the percentiles marked, and the run's figures.
func histHTML(w io.Writer, rep *benchReport) error {
	h := rep.histogram
	const width, height, left, right, top, bottom = 960, 420, 70, 20, 20, 60
	bins := displayBins(h, 80)
	var peak uint64
	for _, b := range bins {
		peak = max(peak, b.n)
	}
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	fmt.Fprintf(&svg, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, left, top, plotW, plotH)
	lo, hi := 0.0, 1.0
	if len(bins) > 0 {
		lo, hi = math.Log(float64(bins[0].lo)), math.Log(float64(bins[len(bins)-1].hi))
	}
	xOf := func(d time.Duration) float64 {
		if hi <= lo {
			return float64(left)
		}
		return float64(left) + plotW*(math.Log(math.Max(float64(d), 1))-lo)/(hi-lo)
	}
	for _, b := range bins {
		if b.n == 0 || peak == 0 {
			continue
		}
		x0, x1 := xOf(b.lo), xOf(b.hi)
		bh := plotH * float64(b.n) / float64(peak)
		fmt.Fprintf(&svg, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7bd0"><title>%s–%s ms: %d</title></rect>`,
			x0, float64(top)+plotH-bh, math.Max(x1-x0-0.5, 0.5), bh, fmtMs(b.lo), fmtMs(b.hi), b.n)
	}
	// Axis ticks at 1-2-5 steps.
	if len(bins) > 0 {
		for dec := time.Duration(1000); dec < 1000*time.Second; dec *= 10 {
			for _, m := range []time.Duration{1, 2, 5} {
				d := dec * m
				if d < bins[0].lo || d > bins[len(bins)-1].hi {
					continue
				}
				x := xOf(d)
				fmt.Fprintf(&svg, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>`, x, height-bottom, x, height-bottom+5)
				fmt.Fprintf(&svg, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, height-bottom+18, fmtMs(d))
			}
		}
	}
	fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="middle">latency (ms, log scale)</text>`, left+int(plotW)/2, height-bottom+38)
	fmt.Fprintf(&svg, `<text x="15" y="%d" transform="rotate(-90 15 %d)" text-anchor="middle">operations</text>`, top+int(plotH)/2, top+int(plotH)/2)
	fmt.Fprintf(&svg, `<text x="%d" y="%d" text-anchor="end">%d</text>`, left-5, top+12, peak)
	for i, p := range []struct {
		name string
		q    float64
		col  string
	}{{"p50", 0.5, "#2a2"}, {"p90", 0.9, "#c80"}, {"p99", 0.99, "#d22"}, {"p99.9", 0.999, "#808"}} {
		d := h.quantile(p.q)
		if len(bins) == 0 {
			break
		}
		x := xOf(d)
		fmt.Fprintf(&svg, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="%s" stroke-dasharray="4 3"/>`, x, top, x, float64(top)+plotH, p.col)
		anchor, tx := "start", x+3
		if x > float64(width-right-90) {
			anchor, tx = "end", x-3 // keep the label inside the plot
		}
		fmt.Fprintf(&svg, `<text x="%.1f" y="%d" fill="%s" text-anchor="%s">%s %s</text>`, tx, top+14+14*i, p.col, anchor, p.name, fmtMs(d))
	}
	svg.WriteString(`</svg>`)

	l := rep.Latency
	var rows strings.Builder
	for k := benchKind(0); k < numKinds; k++ {
		kr, ok := rep.ByKind[k.String()]
		if !ok {
			continue
		}
		fmt.Fprintf(&rows, "<tr><td>%s</td><td>%d</td><td>%d</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td></tr>\n",
			k, kr.OK, kr.Errors, kr.Latency.P50, kr.Latency.P90, kr.Latency.P99, kr.Latency.P999, kr.Latency.Max)
	}
	title := fmt.Sprintf("hats bench %s: %d clients, %s", rep.RunID, rep.Clients, rep.Mix)
	_, err := fmt.Fprintf(w, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%s</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}</style>
</head><body>
<h1>%s</h1>
<p>Started %s against %s; %s mode; elapsed %.2f s; %d operations, %d acknowledged, %d errors;
<b>%.1f ops/s</b> acknowledged (orders %.1f/s).</p>
<p>Latency (ms): p50 %.3f, p90 %.3f, p99 %.3f, p99.9 %.3f, max %.3f, mean %.3f. Longest gap without an acknowledgement: %.3f ms.</p>
%s
<table><tr><th>kind</th><th>ok</th><th>errors</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>
%s</table>
</body></html>
`, html.EscapeString(title), html.EscapeString(title), html.EscapeString(rep.Started), html.EscapeString(strings.Join(rep.Cluster, ",")),
		rep.Mode, rep.ElapsedS, rep.Operations, rep.Acknowledged, rep.Errors, rep.OpsPerSec, rep.OrdersPerSec,
		l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, rep.LongestGapMs, svg.String(), rows.String())
	return err
}

// histPNG draws the histogram's bars on a log latency axis with the
// percentiles as coloured lines (p50 green, p90 orange, p99 red, p99.9
// purple) and a tick at every power of ten of milliseconds. It has no
// text; the HTML form has labels.
func histPNG(w io.Writer, h *latHist, width, height int) error {
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	bg, axis, bar := color.RGBA{0xfa, 0xfa, 0xfa, 0xff}, color.RGBA{0x99, 0x99, 0x99, 0xff}, color.RGBA{0x4a, 0x7b, 0xd0, 0xff}
	for y := 0; y < height; y++ {
		for x := 0; x < width; x++ {
			img.Set(x, y, bg)
		}
	}
	const margin = 20
	plotW, plotH := width-2*margin, height-2*margin
	bins := displayBins(h, plotW/8)
	if len(bins) > 0 {
		var peak uint64
		for _, b := range bins {
			peak = max(peak, b.n)
		}
		lo, hi := math.Log(float64(bins[0].lo)), math.Log(float64(bins[len(bins)-1].hi))
		xOf := func(d time.Duration) int {
			if hi <= lo {
				return margin
			}
			return margin + int(float64(plotW)*(math.Log(math.Max(float64(d), 1))-lo)/(hi-lo))
		}
		for _, b := range bins {
			if b.n == 0 {
				continue
			}
			x0, x1 := xOf(b.lo), max(xOf(b.hi)-1, xOf(b.lo)+1)
			bh := int(float64(plotH) * float64(b.n) / float64(peak))
			for x := x0; x < x1 && x < width-margin; x++ {
				for y := height - margin - bh; y < height-margin; y++ {
					img.Set(x, y, bar)
				}
			}
		}
		for dec := time.Millisecond / 1000; dec < 1000*time.Second; dec *= 10 {
			if dec < bins[0].lo || dec > bins[len(bins)-1].hi {
				continue
			}
			x := xOf(dec)
			for y := height - margin; y < height-margin+8; y++ {
				img.Set(x, y, axis)
			}
		}
		for _, p := range []struct {
			q   float64
			col color.RGBA
		}{{0.5, color.RGBA{0x22, 0xaa, 0x22, 0xff}}, {0.9, color.RGBA{0xcc, 0x88, 0, 0xff}}, {0.99, color.RGBA{0xdd, 0x22, 0x22, 0xff}}, {0.999, color.RGBA{0x88, 0, 0x88, 0xff}}} {
			x := min(xOf(h.quantile(p.q)), width-margin-2)
			for y := margin; y < height-margin; y++ {
				img.Set(x, y, p.col)
				img.Set(x+1, y, p.col)
			}
		}
	}
	for x := margin; x < width-margin; x++ {
		img.Set(x, height-margin, axis)
	}
	for y := margin; y <= height-margin; y++ {
		img.Set(margin, y, axis)
	}
	return png.Encode(w, img)
}

// ---- the command ----

func benchAction(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	cfg, err := benchConfigFrom(cCtx)
	if err != nil {
		return err
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	base, err := e.clientConfig() // validates --cluster, --insecure and the TLS flags
	if err != nil {
		return err
	}
	setup, err := e.clientWith(base)
	if err != nil {
		return err
	}
	if path := cCtx.String("cpu-profile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx := cCtx.Context
	newClient := func(token string) (*transport.Client, error) {
		cfg := base
		cfg.Token = token
		return transport.NewClient(cfg)
	}
	return runBench(ctx, cfg, e.cluster, setup, newClient, e.out, e.errOut, e.json)
}

// runBench is the whole run: check the symbols, set up the traders, drive
// the load, check conservation, report.
func runBench(ctx context.Context, cfg *benchConfig, cluster []string, setup *transport.Client,
	newClient func(token string) (*transport.Client, error), out, errOut io.Writer, asJSON bool) error {
	// A new cluster's first leader commits the instruments just after it
	// starts: give a list that lacks some a couple of seconds to fill in.
	var list *transport.SymbolList
	refs := map[string]int64{}
	var missing string
	for try := 0; ; try++ {
		var err error
		if list, err = setup.Symbols(ctx); err != nil {
			return fmt.Errorf("symbols: %w", err)
		}
		for _, s := range list.Symbols {
			if p, err := market.ParsePrice(s.RefPrice); err == nil {
				refs[s.Symbol] = p
			}
		}
		missing = ""
		for _, s := range cfg.symbols {
			if refs[s] == 0 {
				missing = s
				break
			}
		}
		if missing == "" || try == 20 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if missing != "" {
		var have []string
		for _, in := range list.Symbols {
			have = append(have, in.Symbol)
		}
		return fmt.Errorf("--symbols: %s is not traded on this cluster (it trades %s)", missing, strings.Join(have, ","))
	}
	r := &benchRun{cfg: cfg, runID: newRunID(), refs: refs}
	fmt.Fprintf(errOut, "hats bench: run %s: registering and funding %d traders\n", r.runID, cfg.traders)
	traders, err := setupTraders(ctx, newClient, r.runID, cfg.symbols, cfg.traders)
	if err != nil {
		return err
	}
	if err := pinTraders(ctx, setup, cfg.via, traders); err != nil {
		return err
	}
	workers := make([]*benchWorker, cfg.clients)
	streams := make([]*sharedStream, (cfg.clients+cfg.pipeline-1)/cfg.pipeline)
	seed := rand.Uint64()
	for i := range workers {
		g := i / cfg.pipeline // clients of one stream share its trader
		t := traders[g%len(traders)]
		cl, err := newClient(t.token)
		if err != nil {
			return err
		}
		cl.SetAssigned(t.node, t.nodeAddr)
		if cfg.via == benchViaFollowers {
			cl.SetOrderStreamsToLeader(false) // measure the forwarding path
		}
		if streams[g] == nil {
			streams[g] = &sharedStream{cl: cl, ndjson: cfg.ndjson, opened: &r.streamsOpened, openedNDJSON: &r.streamsNDJSON, atLeader: &r.streamsAtLeader,
				relocate: cfg.via != benchViaFollowers}
		}
		w := &benchWorker{id: i, cl: cl, tr: t, stream: streams[g], rng: rand.New(rand.NewPCG(seed, uint64(i))), errs: map[string]int64{}, out: map[benchOutcome]int64{}}
		for k := range w.hists {
			w.hists[k] = newLatHist()
		}
		workers[i] = w
	}
	var before *transport.ClusterStatus
	if st, err := setup.ClusterStatus(ctx); err == nil {
		before = st
	}

	bound := cfg.duration.String()
	if cfg.orders > 0 {
		bound = fmt.Sprintf("%d operations", cfg.orders)
		if cfg.duration > 0 {
			bound += " or " + cfg.duration.String()
		}
	}
	fmt.Fprintf(errOut, "hats bench: run %s: %d clients for %s\n", r.runID, cfg.clients, bound)
	stop, finished := make(chan struct{}), make(chan struct{})
	r.start = time.Now()
	if f, ok := errOut.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		go progress(errOut, r, stop, finished)
	} else {
		close(finished)
	}
	elapsed := runLoad(ctx, r, workers)
	close(stop)
	<-finished
	var closing sync.WaitGroup
	for _, ss := range streams {
		closing.Add(1)
		go func() {
			defer closing.Done()
			ss.closeCurrent()
		}()
	}
	closing.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}

	rep := buildReport(r, workers, elapsed)
	rep.Cluster = cluster
	if before != nil {
		rep.LeaderBefore, rep.TermBefore = before.Leader, before.Term
	}
	if st, err := setup.ClusterStatus(ctx); err == nil {
		rep.LeaderAfter, rep.TermAfter = st.Leader, st.Term
	}
	fmt.Fprintf(errOut, "hats bench: run %s: checking conservation\n", r.runID)
	rep.Conservation = conserve(ctx, newClient, traders)
	if cfg.histPath != "" {
		if err := writeHistogram(cfg.histPath, rep); err != nil {
			return fmt.Errorf("--histogram: %w", err)
		}
		rep.HistogramFile = cfg.histPath
	}
	if asJSON {
		if err := printJSON(out, rep); err != nil {
			return err
		}
	} else {
		printBenchReport(out, rep)
	}
	if !rep.Conservation.OK {
		return fmt.Errorf("conservation check failed: %s", strings.Join(rep.Conservation.Problems[:min(3, len(rep.Conservation.Problems))], "; "))
	}
	return nil
}

// gapClock is the longest gap's wall-clock start for the text report.
func gapClock(at string) string {
	if at == "" {
		return ""
	}
	return ", " + at
}
