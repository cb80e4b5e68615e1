package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

func Test_parseMix(t *testing.T) {
	good := map[string]benchMix{
		"limit:70,market:20,cancel:10": {70, 20, 10, 0},
		"deposit:1":                    {0, 0, 0, 1},
		" Limit : 3 , deposit:0 ,":     {3, 0, 0, 0},
		"market:5,limit:5":             {5, 5, 0, 0},
	}
	for in, want := range good {
		got, err := parseMix(in)
		if err != nil || got != want {
			t.Errorf("parseMix(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"":                   "no operation has a positive weight",
		"limit:0":            "no operation has a positive weight",
		"limit":              `"limit" is not KIND:WEIGHT`,
		"amend:5":            `unknown kind "amend"`,
		"limit:5,limit:6":    `kind "limit" given twice`,
		"limit:-1":           "weight of limit must be a whole number",
		"limit:x":            "weight of limit must be a whole number",
		"limit:2000000":      "weight of limit must be a whole number",
		"limit:1,market:1.5": "weight of market must be a whole number",
	}
	for in, want := range bad {
		if _, err := parseMix(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseMix(%q) error = %v, want it to contain %q", in, err, want)
		}
	}
	m, _ := parseMix(benchDefaultMix)
	if m.String() != benchDefaultMix {
		t.Errorf("String() = %q, want %q", m.String(), benchDefaultMix)
	}
}

func Test_benchMix_pick(t *testing.T) {
	m := benchMix{70, 20, 10, 0}
	var got [numKinds]int
	for r := 0; r < m.total(); r++ {
		got[m.pick(r)]++
	}
	if got != [numKinds]int{70, 20, 10, 0} {
		t.Fatalf("pick over [0,100) gives %v", got)
	}
}

func Test_histBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 999_999, 1_000_000, 123_456_789, benchHistMaxNanos - 1, benchHistMaxNanos} {
		i := histBucket(v)
		if i < prev {
			t.Errorf("bucket of %d is %d, below the previous value's %d", v, i, prev)
		}
		prev = i
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucket of %d is %d, outside [0,%d)", v, i, histBuckets)
		}
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("%d falls in bucket %d = [%d,%d]", v, i, lo, hi)
		}
		if v >= histSub && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Errorf("bucket %d = [%d,%d] is wider than 1/64 of its values", i, lo, hi)
		}
	}
	// Every bucket's bounds map back to it, and buckets tile the line.
	for i := 0; i < histBucket(benchHistMaxNanos); i++ {
		lo, hi := histBounds(i)
		nlo, _ := histBounds(i + 1)
		if histBucket(lo) != i || histBucket(hi) != i || nlo != hi+1 {
			t.Fatalf("bucket %d = [%d,%d] (next starts at %d) does not round-trip", i, lo, hi, nlo)
		}
	}
	if histBucket(-5) != 0 || histBucket(math.MaxInt64) != histBucket(benchHistMaxNanos) {
		t.Error("out-of-range values are not clamped")
	}
}

func Test_latHist_quantile(t *testing.T) {
	h := newLatHist()
	if h.quantile(0.5) != 0 || h.mean() != 0 {
		t.Fatal("empty histogram should report 0")
	}
	// 1 µs .. 10,000 µs, shuffled.
	vals := rand.Perm(10_000)
	for _, v := range vals {
		h.record(time.Duration(v+1) * time.Microsecond)
	}
	within := func(name string, got, want time.Duration) {
		t.Helper()
		if d := math.Abs(float64(got-want)) / float64(want); d > 0.01 {
			t.Errorf("%s = %v, want %v ±1%%", name, got, want)
		}
	}
	within("p50", h.quantile(0.50), 5000*time.Microsecond)
	within("p90", h.quantile(0.90), 9000*time.Microsecond)
	within("p99", h.quantile(0.99), 9900*time.Microsecond)
	within("p99.9", h.quantile(0.999), 9990*time.Microsecond)
	if h.quantile(1) != 10*time.Millisecond || h.max != int64(10*time.Millisecond) || h.min != int64(time.Microsecond) {
		t.Errorf("max %v (q=1 %v), min %v", time.Duration(h.max), h.quantile(1), time.Duration(h.min))
	}
	within("mean", h.mean(), 5000500*time.Nanosecond)

	// Merging two halves gives the same histogram.
	a, b := newLatHist(), newLatHist()
	for i, v := range vals {
		if i%2 == 0 {
			a.record(time.Duration(v+1) * time.Microsecond)
		} else {
			b.record(time.Duration(v+1) * time.Microsecond)
		}
	}
	a.merge(b)
	a.merge(newLatHist())
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		if a.quantile(q) != h.quantile(q) {
			t.Errorf("merged q%v = %v, want %v", q, a.quantile(q), h.quantile(q))
		}
	}
	if a.n != h.n || a.sum != h.sum || a.min != h.min || a.max != h.max {
		t.Errorf("merged %d/%d/%d/%d, want %d/%d/%d/%d", a.n, a.sum, a.min, a.max, h.n, h.sum, h.min, h.max)
	}

	// One value: every quantile is that value, exactly.
	one := newLatHist()
	one.record(1234567)
	for _, q := range []float64{0.001, 0.5, 0.999, 1} {
		if one.quantile(q) != 1234567 {
			t.Errorf("single value: q%v = %d", q, one.quantile(q))
		}
	}
}

func Test_errorKind(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&transport.OrderRejectedError{Err: &transport.APIError{Status: 422, Code: "insufficient_funds"}}, "rejected:insufficient_funds"},
		{&transport.OutcomeUnknownError{Key: "k", Err: errors.New("x")}, "outcome_unknown"},
		{fmt.Errorf("deposit: %w", context.Canceled), "canceled"},
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("x: %w after 3 attempts", transport.ErrNoNodes), "no_reachable_node"},
		{&transport.APIError{Status: 503, Code: transport.CodeNoLeader}, "no_leader"},
		{&transport.APIError{Status: 422, Code: transport.CodeOrderNotOpen}, "order_not_open"},
		{fmt.Errorf("%w: order stream closed: EOF", transport.ErrUnavailable), "unavailable"},
		{errors.New("boom"), "other"},
	}
	for _, tc := range cases {
		if got := errorKind(tc.err); got != tc.want {
			t.Errorf("errorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func Test_commas(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := commas(n); got != want {
			t.Errorf("commas(%d) = %q, want %q", n, got, want)
		}
	}
}

func Test_limitPrice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10_000; i++ {
		p := limitPrice(rng, 18910)
		if p < 18910-94 || p > 18910+94 {
			t.Fatalf("limit price %d is more than 0.5%% from 18910", p)
		}
	}
	if limitPrice(rng, 1) < 1 {
		t.Fatal("a price below one cent")
	}
}

func sampleReport() *benchReport {
	h := newLatHist()
	for i := 1; i <= 5000; i++ {
		h.record(time.Duration(200+i*i/50) * time.Microsecond)
	}
	rep := &benchReport{RunID: "abc123", Clients: 4, Mix: "limit:1", Mode: "closed", Cluster: []string{"127.0.0.1:1"},
		histogram: h, Latency: summarize(h), ByKind: map[string]benchKindReport{"limit": {OK: 5000, Latency: summarize(h)}}}
	return rep
}

func Test_histogramFiles(t *testing.T) {
	rep := sampleReport()
	dir := t.TempDir()

	htmlPath := filepath.Join(dir, "lat.html")
	if err := writeHistogram(htmlPath, rep); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := histHTML(&buf, rep); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"<!DOCTYPE html>", "<svg", "</svg>", "p50", "p99.9", "<rect", "abc123", "latency (ms, log scale)"} {
		if !strings.Contains(page, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	for _, banned := range []string{"<script", "<link", "src="} {
		if strings.Contains(page, banned) {
			t.Errorf("HTML is not self-contained: it has %q", banned)
		}
	}

	pngPath := filepath.Join(dir, "lat.png")
	if err := writeHistogram(pngPath, rep); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := histPNG(&buf, rep.histogram, 640, 320); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 320 {
		t.Fatalf("PNG is %v", b)
	}
	// Some bar pixels are drawn.
	bars := 0
	for x := 0; x < 640; x++ {
		if r, g, b, _ := img.At(x, 295).RGBA(); r>>8 == 0x4a && g>>8 == 0x7b && b>>8 == 0xd0 {
			bars++
		}
	}
	if bars < 50 {
		t.Fatalf("only %d bar pixels on the base line", bars)
	}

	// Empty histograms draw too.
	empty := &benchReport{histogram: newLatHist(), ByKind: map[string]benchKindReport{}}
	if err := histHTML(io.Discard, empty); err != nil {
		t.Fatal(err)
	}
	if err := histPNG(io.Discard, empty.histogram, 100, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := histFormat("x.jpg"); err == nil {
		t.Fatal("x.jpg accepted")
	}
}

func Test_displayBins(t *testing.T) {
	h := sampleReport().histogram
	bins := displayBins(h, 40)
	var n uint64
	for i, b := range bins {
		n += b.n
		if i > 0 && b.lo != bins[i-1].hi {
			t.Fatalf("bin %d starts at %v, the previous ends at %v", i, b.lo, bins[i-1].hi)
		}
	}
	if n != h.n || len(bins) != 40 {
		t.Fatalf("%d bins hold %d values, want 40 holding %d", len(bins), n, h.n)
	}
}

// A funded trader and a statement that reconciles.
func checkFixture() (*benchTrader, []transport.ActivityEntry, *transport.Portfolio) {
	t := &benchTrader{name: "bench-x-000", cashBefore: 1_000_000, sharesBefore: map[string]int64{"AAPL": 100}, seqBefore: 2, ackFilled: map[uint64]int64{}}
	t.deposited.Store(100)
	t.noteFilled(7, 5)
	t.noteFilled(8, 2)
	entries := []transport.ActivityEntry{
		{Seq: 3, Kind: "buy", Symbol: "AAPL", Quantity: 5, Amount: "-950.00", CashBalance: "9050.00", ShareBalance: 105, OrderID: 7},
		{Seq: 4, Kind: "deposit", Amount: "1.00", CashBalance: "9051.00"},
		{Seq: 5, Kind: "sell", Symbol: "AAPL", Quantity: -2, Amount: "380.00", CashBalance: "9431.00", ShareBalance: 103, OrderID: 8},
		{Seq: 6, Kind: "sell", Symbol: "AAPL", Quantity: -1, Amount: "190.00", CashBalance: "9621.00", ShareBalance: 102, OrderID: 8},
	}
	pf := &transport.Portfolio{Cash: "9621.00", AvailableCash: "9000.00", Positions: []transport.PortfolioPosition{{Symbol: "AAPL", Quantity: 102, AvailableQuantity: 100}}}
	return t, entries, pf
}

func Test_checkTrader(t *testing.T) {
	tr, entries, pf := checkFixture()
	c := checkTrader(tr, entries, pf)
	if len(c.problems) != 0 || c.entries != 4 || c.buys != 1 || c.sells != 2 {
		t.Fatalf("clean statement: %+v", c)
	}

	mutations := map[string]func(*benchTrader, []transport.ActivityEntry, *transport.Portfolio) []transport.ActivityEntry{
		"portfolio cash": func(_ *benchTrader, e []transport.ActivityEntry, p *transport.Portfolio) []transport.ActivityEntry {
			p.Cash = "9620.00"
			return e
		},
		"statement jumps": func(_ *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			return append(e[:1:1], e[2:]...)
		},
		"cash balance": func(_ *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			e[1].CashBalance = "9052.00"
			return e
		},
		"AAPL balance": func(_ *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			e[2].ShareBalance = 104
			return e
		},
		"portfolio holds": func(_ *benchTrader, e []transport.ActivityEntry, p *transport.Portfolio) []transport.ActivityEntry {
			p.Positions[0].Quantity = 103
			return e
		},
		"of deposits": func(tr *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			tr.deposited.Store(200) // acknowledged twice, stored once
			return e
		},
		"acknowledged with 5 shares": func(tr *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			tr.noteFilled(9, 5) // an acknowledged fill missing from the statement
			tr.noteFilled(7, 6)
			return e
		},
		"available": func(_ *benchTrader, e []transport.ActivityEntry, p *transport.Portfolio) []transport.ActivityEntry {
			p.Positions[0].AvailableQuantity = -1
			return e
		},
		"available cash": func(_ *benchTrader, e []transport.ActivityEntry, p *transport.Portfolio) []transport.ActivityEntry {
			p.AvailableCash = "-1.00"
			return e
		},
		"unexpected withdrawal": func(_ *benchTrader, e []transport.ActivityEntry, _ *transport.Portfolio) []transport.ActivityEntry {
			e[1].Kind = "withdrawal"
			return e
		},
		"went negative": func(tr *benchTrader, e []transport.ActivityEntry, p *transport.Portfolio) []transport.ActivityEntry {
			tr.cashBefore = 0
			for i := range e {
				c, _ := trader.ParseCents(e[i].CashBalance)
				e[i].CashBalance = (c - 1_000_000).String()
			}
			p.Cash = "-378.00"
			return e
		},
	}
	for want, mutate := range mutations {
		tr, entries, pf := checkFixture()
		entries = mutate(tr, entries, pf)
		c := checkTrader(tr, entries, pf)
		found := false
		for _, p := range c.problems {
			if strings.Contains(p, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("mutation %q: problems %q do not mention it", want, c.problems)
		}
	}

	// Deposits whose outcome stayed unknown may or may not be there.
	tr, entries, pf = checkFixture()
	tr.deposited.Store(0)
	tr.depositUnknown.Store(100)
	if c := checkTrader(tr, entries, pf); len(c.problems) != 0 {
		t.Errorf("unknown deposit present: %q", c.problems)
	}
	// Fills after the acknowledgement (a resting order) are fine.
	tr, entries, pf = checkFixture()
	tr.ackFilled[8] = 1
	if c := checkTrader(tr, entries, pf); len(c.problems) != 0 {
		t.Errorf("later fills: %q", c.problems)
	}
}

func Test_bench_UsageErrors(t *testing.T) {
	sess := filepath.Join(t.TempDir(), "s.json")
	for _, args := range [][]string{
		{"bench", "--clients", "0"},
		{"bench", "--clients", "20000"},
		{"bench", "--traders", "5", "--clients", "2"},
		{"bench", "--duration", "0s"},
		{"bench", "--orders", "-1"},
		{"bench", "--rate", "-5"},
		{"bench", "--mix", "limit:0"},
		{"bench", "--mix", "foo:1"},
		{"bench", "--symbols", ","},
		{"bench", "--symbols", "bad symbol!"},
		{"bench", "--histogram", "x.gif"},
		{"bench", "--pipeline", "4"},
		{"bench", "--ndjson"},
		{"bench", "--stream", "--pipeline", "0"},
		{"bench", "--stream", "--pipeline", "5000"},
		{"bench", "--via", "nowhere"},
		{"bench", "extra"},
	} {
		code, _, stderr := runHats(t, "", append(args, "--cluster", "127.0.0.1:1", "--insecure", "--session", sess)...)
		if code != exitUsage {
			t.Errorf("hats %q exited %d, want 2 (stderr %q)", args, code, stderr)
		}
	}
	code, _, stderr := runHats(t, "", "bench", "--cluster", "127.0.0.1:1", "--session", sess)
	if code == 0 || !strings.Contains(stderr, "--insecure") {
		t.Errorf("plaintext without --insecure: exit %d, %q", code, stderr)
	}
}

// Test_bench_Smoke runs a short bench against an in-process one-node
// cluster: every kind of operation, a count bound, --json and a histogram.
func Test_bench_Smoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := t.TempDir()
	raftPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{
		ID: "n1", DataDir: filepath.Join(dir, "n1"),
		RaftAddr: fmt.Sprintf("127.0.0.1:%d", raftPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, LeaderLeaseTimeout: 50 * time.Millisecond,
		BcryptCost: 4, Logger: newLogger("error", io.Discard), RaftLogLevel: "error", RaftLogOut: io.Discard,
		Feed: node.FeedConfig{Kind: "none"},
	}
	ctx := context.Background()
	rn, err := startNode(ctx, cfg, cfg.RaftAddr, cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rn.stop() })
	if err := waitReady(ctx, []*runningNode{rn}, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// The first leader commits the instruments just after it is ready.
	cl, err := transport.NewClient(transport.ClientConfig{Nodes: []string{cfg.HTTPAddr}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		list, err := cl.Symbols(ctx)
		if err == nil && len(list.Symbols) > 0 {
			break
		}
		if i == 500 {
			t.Fatalf("no instruments after 5s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	hist := filepath.Join(dir, "lat.html")
	code, stdout, stderr := runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "6", "--traders", "3", "--orders", "400", "--mix", "limit:50,market:20,cancel:20,deposit:10",
		"--json", "--histogram", hist)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	var rep struct {
		Operations   int64                      `json:"operations"`
		Acknowledged int64                      `json:"acknowledged"`
		Errors       int64                      `json:"errors"`
		OpsPerSec    float64                    `json:"ops_per_s"`
		Latency      benchLatency               `json:"latency"`
		ByKind       map[string]benchKindReport `json:"by_kind"`
		Outcomes     map[string]int64           `json:"outcomes"`
		Conservation benchConservation          `json:"conservation"`
		Histogram    string                     `json:"histogram_file"`
		Streams      int                        `json:"order_streams"`
		Opened       int64                      `json:"order_streams_opened"`
		AtLeader     int64                      `json:"order_streams_at_leader"`
		Encoding     string                     `json:"stream_encoding"`
		Via          string                     `json:"via"`
		GapMs        float64                    `json:"longest_gap_ms"`
		GapAtS       float64                    `json:"longest_gap_at_s"`
		GapAt        string                     `json:"longest_gap_at"`
	}
	before := time.Now()
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	// The longest gap's wall-clock start lies within the run, at its
	// offset from the start (the run began before this process returned).
	if at, err := time.Parse(time.RFC3339Nano, rep.GapAt); err != nil || rep.GapMs <= 0 || at.After(before) ||
		before.Sub(at) > 5*time.Minute || at.Location() != time.UTC {
		t.Errorf("longest gap %v ms at %v s, wall clock %q (%v)", rep.GapMs, rep.GapAtS, rep.GapAt, err)
	}
	if rep.Operations != 400 || rep.Acknowledged+rep.Errors != 400 || rep.OpsPerSec <= 0 {
		t.Errorf("operations %d (ok %d, errors %d), %v ops/s", rep.Operations, rep.Acknowledged, rep.Errors, rep.OpsPerSec)
	}
	if rep.Errors != 0 {
		t.Errorf("%d errors: %s", rep.Errors, stdout)
	}
	for _, k := range []string{"limit", "market", "cancel", "deposit"} {
		if rep.ByKind[k].OK == 0 {
			t.Errorf("no %s operation acknowledged: %+v", k, rep.ByKind)
		}
	}
	l := rep.Latency
	if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("latency figures out of order: %+v", l)
	}
	if !rep.Conservation.OK || rep.Conservation.Traders != 3 || rep.Conservation.Entries == 0 {
		t.Errorf("conservation: %+v", rep.Conservation)
	}
	if rep.Histogram != hist {
		t.Errorf("histogram file %q", rep.Histogram)
	}

	// The human report, with a time bound instead.
	code, stdout, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "2", "--duration", "300ms", "--rate", "200", "--symbols", "msft")
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	for _, want := range []string{"open loop at 200 ops/s", "symbols MSFT", "throughput", "p99.9", "conservation  ok"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}

	// Orders and cancels over order streams.
	code, stdout, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "3", "--orders", "150", "--stream", "--mix", "limit:60,market:20,cancel:20", "--json")
	if code != 0 {
		t.Fatalf("--stream: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	rep.Conservation, rep.Errors, rep.Acknowledged = benchConservation{}, -1, 0
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--stream --json output: %v\n%s", err, stdout)
	}
	if rep.Acknowledged != 150 || rep.Errors != 0 || !rep.Conservation.OK || rep.ByKind["cancel"].OK == 0 || rep.Encoding != "binary" {
		t.Errorf("--stream: %d acknowledged, %d errors, by kind %+v, conservation %+v, encoding %q", rep.Acknowledged, rep.Errors, rep.ByKind, rep.Conservation, rep.Encoding)
	}

	// The same on NDJSON streams.
	code, stdout, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "3", "--orders", "90", "--stream", "--ndjson", "--mix", "limit:60,market:20,cancel:20", "--json")
	if code != 0 {
		t.Fatalf("--ndjson: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	rep.Conservation, rep.Errors, rep.Acknowledged, rep.Encoding = benchConservation{}, -1, 0, ""
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--ndjson --json output: %v\n%s", err, stdout)
	}
	if rep.Acknowledged != 90 || rep.Errors != 0 || !rep.Conservation.OK || rep.Encoding != "ndjson" {
		t.Errorf("--ndjson: %d acknowledged, %d errors, conservation %+v, encoding %q", rep.Acknowledged, rep.Errors, rep.Conservation, rep.Encoding)
	}

	// Six clients pipelining on two shared streams.
	code, stdout, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "6", "--pipeline", "3", "--orders", "150", "--stream", "--mix", "limit:60,market:20,cancel:20", "--json")
	if code != 0 {
		t.Fatalf("--pipeline: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	rep.Conservation, rep.Errors, rep.Acknowledged, rep.Streams, rep.Opened, rep.AtLeader = benchConservation{}, -1, 0, 0, 0, 0
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--pipeline --json output: %v\n%s", err, stdout)
	}
	// Two streams, each opened once (a stream reopened per operation would
	// show here), both at the leader, the only node.
	if rep.Acknowledged != 150 || rep.Errors != 0 || !rep.Conservation.OK || rep.Streams != 2 || rep.Opened != 2 || rep.AtLeader != 2 || rep.ByKind["cancel"].OK == 0 {
		t.Errorf("--pipeline: %d acknowledged on %d streams (%d opened, %d at the leader), %d errors, by kind %+v, conservation %+v", rep.Acknowledged, rep.Streams, rep.Opened, rep.AtLeader, rep.Errors, rep.ByKind, rep.Conservation)
	}

	// Pinned to the leader; a one-node cluster has no followers to pin to.
	code, stdout, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--clients", "2", "--orders", "40", "--via", "leader", "--json")
	rep.Via, rep.Acknowledged, rep.Errors = "", 0, -1
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil {
		t.Fatalf("--via leader: exit %d, %v\nstdout %s\nstderr %s", code, err, stdout, stderr)
	}
	if rep.Via != "leader" || rep.Acknowledged != 40 || rep.Errors != 0 || !rep.Conservation.OK {
		t.Errorf("--via leader: via %q, %d acknowledged, %d errors, conservation %+v", rep.Via, rep.Acknowledged, rep.Errors, rep.Conservation)
	}
	code, _, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--orders", "1", "--via", "followers")
	if code == 0 || !strings.Contains(stderr, "--via followers") {
		t.Errorf("--via followers on one node: exit %d, %q", code, stderr)
	}

	// An unknown symbol is refused before any trader is registered.
	code, _, stderr = runHats(t, "", "bench", "--cluster", cfg.HTTPAddr, "--insecure", "--session", filepath.Join(dir, "s.json"),
		"--orders", "1", "--symbols", "NOPE")
	if code == 0 || !strings.Contains(stderr, "NOPE is not traded") {
		t.Errorf("unknown symbol: exit %d, %q", code, stderr)
	}
}

// Run IDs name the bench's traders, so two runs against one cluster must
// not share one; they come from the random tail of a key, not its time
// head (which repeats for hours).
func TestRunIDsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		id := newRunID()
		if len(id) != 6 || seen[id] {
			t.Fatalf("run id %q: repeated or not six digits", id)
		}
		seen[id] = true
	}
}

// A shared stream that did not open at the leader is replaced by one that
// does once relocateEvery has passed and a node names the leader; the
// old stream is closed after answering what it carried. With relocation
// off (--via followers) the stream stays.
func Test_sharedStream_Relocates(t *testing.T) {
	var leaderName atomic.Pointer[string]
	none := ""
	leaderName.Store(&none)
	var followerOpened, followerEnded, leaderOpened atomic.Int32
	serve := func(ended *atomic.Int32, opened *atomic.Int32, name func() string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "" {
				// As a node that predates upgraded streams answers the
				// upgrade: a plain stream of no requests. The client then
				// opens an HTTP stream, the one counted here.
				w.Header().Set("Content-Type", transport.StreamContentBinary)
				return
			}
			if opened != nil {
				opened.Add(1)
			}
			if ended != nil {
				defer ended.Add(1)
			}
			_ = http.NewResponseController(w).EnableFullDuplex()
			w.Header().Set("Content-Type", transport.StreamContentBinary)
			if n := name(); n != "" {
				w.Header().Set(transport.HeaderLeader, n)
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			_, _ = io.Copy(io.Discard, r.Body)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	var leader *httptest.Server
	leader = serve(nil, &leaderOpened, func() string { return strings.TrimPrefix(leader.URL, "http://") })
	follower := serve(&followerEnded, &followerOpened, func() string { return *leaderName.Load() })
	newShared := func(relocate bool) *sharedStream {
		cl, err := transport.NewClient(transport.ClientConfig{Nodes: []string{follower.URL}, Token: "tok", Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if !relocate {
			cl.SetOrderStreamsToLeader(false)
		}
		return &sharedStream{cl: cl, opened: new(atomic.Int64), openedNDJSON: new(atomic.Int64), atLeader: new(atomic.Int64), relocate: relocate}
	}
	ctx := context.Background()
	for _, relocate := range []bool{true, false} {
		leaderName.Store(&none) // the follower knows no leader yet
		ss := newShared(relocate)
		first, err := ss.get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if first.AtLeader() || first.Node() != follower.URL {
			t.Fatalf("first stream at %s, want the follower", first.Node())
		}
		addr := strings.TrimPrefix(leader.URL, "http://")
		leaderName.Store(&addr)
		deadline := time.Now().Add(5 * time.Second)
		if !relocate {
			deadline = time.Now().Add(relocateEvery + 300*time.Millisecond)
		}
		var s *transport.OrderStream
		for {
			if s, err = ss.get(ctx); err != nil {
				t.Fatal(err)
			}
			if s != first || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !relocate {
			if s != first || ss.opened.Load() != 1 {
				t.Fatalf("without relocation the stream changed (%d opened)", ss.opened.Load())
			}
			ss.closeCurrent()
			continue
		}
		if s == first || !s.AtLeader() || ss.opened.Load() != 2 || ss.atLeader.Load() != 1 {
			t.Fatalf("after the leader became known: stream at %s (at leader %v), %d opened, %d at the leader", s.Node(), s.AtLeader(), ss.opened.Load(), ss.atLeader.Load())
		}
		ss.closeCurrent()
		// The replaced stream, and the one the relocating open moved away
		// from, are both closed.
		for end := time.Now().Add(5 * time.Second); followerEnded.Load() != 2 && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		if o, e := followerOpened.Load(), followerEnded.Load(); o != 2 || e != 2 {
			t.Fatalf("follower streams: %d opened, %d ended; want 2 and 2", o, e)
		}
	}
}
