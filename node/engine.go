package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/transport"
)

// ErrFeed reports a bad --feed setting.
var ErrFeed = errors.New("bad feed configuration")

// FeedConfig configures the Market Engine, which runs on the leader only.
type FeedConfig struct {
	Kind        string        // sim (default), http, file, none
	URL         string        // http(s) feeds
	Path        string        // file feeds
	Interval    time.Duration // default 1s
	Speed       float64       // file replay: market seconds per wall second (default 60)
	BandPct     float64       // reject jumps beyond this percentage (default 20)
	Seed        uint64        // sim: seed of a brand new walk
	MMSpreadBps int64         // market making spread (default 20 bps)
	MMSize      int64         // market making quote size; 0 turns it off
	HTTPTimeout time.Duration // per request; default Interval/2
}

// ParseFeed turns a --feed value into a FeedConfig kind and location.
func ParseFeed(s string) (kind, loc string, err error) {
	switch {
	case s == "" || s == "sim":
		return "sim", "", nil
	case s == "none":
		return "none", "", nil
	case strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "https://"):
		return "http", s, nil
	case strings.HasPrefix(s, "file:") && len(s) > 5:
		return "file", s[5:], nil
	}
	return "", "", fmt.Errorf("%w: --feed must be sim, none, http(s)://URL or file:PATH, got %q", ErrFeed, s)
}

func (c *FeedConfig) setDefaults() {
	if c.Kind == "" {
		c.Kind = "sim"
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Speed <= 0 {
		c.Speed = 60
	}
	if c.BandPct <= 0 {
		c.BandPct = 20
	}
	if c.MMSpreadBps <= 0 {
		c.MMSpreadBps = 20
	}
	if c.HTTPTimeout <= 0 {
		c.HTTPTimeout = c.Interval / 2
	}
	if c.Seed == 0 {
		c.Seed = 0x4841545321 // "HATS!"
	}
}

// engine is the Market Engine: started when this node becomes leader,
// stopped when it loses leadership.
type engine struct {
	n    *Node
	cfg  FeedConfig
	hc   *http.Client
	rows []market.ReplayRow // file feed, loaded once

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	running  atomic.Bool
	ticks    atomic.Uint64
	errors   atomic.Uint64
	rejected atomic.Uint64
}

func newEngine(n *Node, cfg FeedConfig) (*engine, error) {
	cfg.setDefaults()
	e := &engine{n: n, cfg: cfg, hc: &http.Client{Timeout: cfg.HTTPTimeout}}
	switch cfg.Kind {
	case "sim", "none", "http":
	case "file":
		f, err := os.Open(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrFeed, err)
		}
		defer f.Close()
		e.rows, err = market.ParseReplay(f, parseReplayTime)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrFeed, cfg.Path, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown feed kind %q", ErrFeed, cfg.Kind)
	}
	return e, nil
}

func parseReplayTime(s string) (int64, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.Unix(), nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// start runs the engine loop until stop; a no-op for feed none.
func (e *engine) start() {
	if e.cfg.Kind == "none" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	e.running.Store(true)
	go e.loop(ctx, e.done)
	e.n.log.Info("market engine started", "feed", e.cfg.Kind)
}

func (e *engine) stop() {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	e.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	e.running.Store(false)
	e.n.log.Info("market engine stopped")
}

func (e *engine) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	first := true // a new leader ticks at once, so takeover costs no extra interval
	for {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		first = false
		if !e.n.IsLeader() {
			continue
		}
		if err := e.tick(ctx); err != nil && ctx.Err() == nil {
			e.errors.Add(1)
			e.n.log.Warn("market engine tick", "err", err)
		}
	}
}

// tick computes the next prices from the replicated feed state and commits
// them with the state's successor in one command.
func (e *engine) tick(ctx context.Context) error {
	var info fsm.FeedInfo
	var refs []market.TickPrice
	_ = e.n.fsm.View(func(v *fsm.View) error {
		info = v.Feed()
		for _, in := range v.Instruments() {
			refs = append(refs, market.TickPrice{Symbol: in.Symbol, Price: in.RefPrice})
		}
		return nil
	})
	if len(refs) == 0 {
		return nil
	}
	state := info.State
	if info.Kind != e.cfg.Kind {
		state = nil // the feed changed: start its own state afresh
	}
	var prices []market.TickPrice
	var err error
	switch e.cfg.Kind {
	case "sim":
		prices, state, err = e.sim(state, refs)
	case "http":
		prices, err = e.fetch(ctx, refs)
		state = nil
	case "file":
		prices, state = e.replay(state, refs)
	}
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, e.cfg.Interval*3)
	defer cancel()
	res, err := e.n.applyLocal(cctx, &fsm.Command{
		Type: fsm.TypeTick, TickSeq: info.Seq + 1, FeedKind: e.cfg.Kind, FeedState: state,
		Prices: prices, MMSpread: e.cfg.MMSpreadBps, MMSize: e.cfg.MMSize,
	})
	if err != nil {
		return err
	}
	if err := res.Err(); err != nil {
		return err
	}
	e.ticks.Add(1)
	return nil
}

func (e *engine) sim(state []byte, refs []market.TickPrice) ([]market.TickPrice, []byte, error) {
	st, err := market.DecodeSimState(state, e.cfg.Seed)
	if err != nil {
		return nil, nil, err
	}
	prices := market.SimStep(&st, refs)
	return prices, market.EncodeSimState(st), nil
}

// fetch downloads quotes; rows that do not parse, name unknown symbols or
// jump beyond the band are counted and dropped, never committed.
func (e *engine) fetch(ctx context.Context, refs []market.TickPrice) ([]market.TickPrice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.cfg.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFeed, err)
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("feed %s: %w", e.cfg.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("feed %s: HTTP %d", e.cfg.URL, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("feed %s: %w", e.cfg.URL, err)
	}
	rows, errs := market.ParseFeed(data)
	e.rejected.Add(uint64(len(errs)))
	return e.filter(rows, refs), nil
}

func (e *engine) filter(rows, refs []market.TickPrice) []market.TickPrice {
	prev := map[string]int64{}
	for _, r := range refs {
		prev[r.Symbol] = r.Price
	}
	var out []market.TickPrice
	for _, r := range rows {
		p, known := prev[r.Symbol]
		if !known || market.CheckBand(p, r.Price, e.cfg.BandPct) != nil {
			e.rejected.Add(1)
			continue
		}
		out = append(out, r)
	}
	return out
}

// replay advances the file's virtual clock by one interval times the speed
// and emits every row up to it. State: next row index and virtual time.
func (e *engine) replay(state []byte, refs []market.TickPrice) ([]market.TickPrice, []byte) {
	var next uint64
	var vt int64
	if len(state) == 16 {
		next = binary.BigEndian.Uint64(state)
		vt = int64(binary.BigEndian.Uint64(state[8:]))
	} else {
		vt = e.rows[0].Time
	}
	vt += int64(e.cfg.Interval.Seconds() * e.cfg.Speed)
	var rows []market.TickPrice
	for next < uint64(len(e.rows)) && e.rows[next].Time <= vt {
		r := e.rows[next]
		rows = append(rows, market.TickPrice{Symbol: r.Symbol, Price: r.Price})
		next++
	}
	if next >= uint64(len(e.rows)) { // loop the file
		next, vt = 0, e.rows[0].Time
	}
	out := binary.BigEndian.AppendUint64(nil, next)
	out = binary.BigEndian.AppendUint64(out, uint64(vt))
	return e.filter(dedupeLast(rows), refs), out
}

func dedupeLast(rows []market.TickPrice) []market.TickPrice {
	last := map[string]int{}
	var order []string
	for i, r := range rows {
		if _, ok := last[r.Symbol]; !ok {
			order = append(order, r.Symbol)
		}
		last[r.Symbol] = i
	}
	out := make([]market.TickPrice, 0, len(order))
	for _, s := range order {
		out = append(out, rows[last[s]])
	}
	return out
}

// status reports the engine's health from this node's point of view.
func (e *engine) status() transport.EngineStatus {
	var info fsm.FeedInfo
	_ = e.n.fsm.View(func(v *fsm.View) error { info = v.Feed(); return nil })
	st := transport.EngineStatus{
		Running: e.running.Load(), Feed: e.cfg.Kind, LastTickSeq: info.Seq,
		Ticks: e.ticks.Load(), Errors: e.errors.Load(), RejectedRow: e.rejected.Load(),
	}
	if info.Time != 0 {
		st.LastTick = time.Unix(0, info.Time).UTC()
		st.Stale = time.Since(st.LastTick) > 3*e.cfg.Interval
	} else {
		st.Stale = e.cfg.Kind != "none"
	}
	return st
}
