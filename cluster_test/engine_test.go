package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/node"
)

// tickObs is what one node's state said at one tick.
type tickObs struct {
	seq   uint64
	state []byte
	refs  []market.TickPrice
}

func observeTick(tn *TNode) tickObs {
	var o tickObs
	_ = tn.Node.FSM().View(func(v *fsm.View) error {
		fi := v.Feed()
		o.seq, o.state = fi.Seq, fi.State
		for _, in := range v.Instruments() {
			o.refs = append(o.refs, market.TickPrice{Symbol: in.Symbol, Price: in.RefPrice})
		}
		return nil
	})
	return o
}

func engineCluster(t *testing.T, feed node.FeedConfig) *Cluster {
	return NewCluster(t, 3, func(cfg *node.Config) { cfg.Feed = feed })
}

func waitTick(t *testing.T, tn *TNode, atLeast uint64, within time.Duration) tickObs {
	t.Helper()
	var o tickObs
	Poll(t, within, fmt.Sprintf("%s reaches tick %d", tn.ID, atLeast), func() error {
		o = observeTick(tn)
		if o.seq < atLeast {
			return fmt.Errorf("at tick %d", o.seq)
		}
		return nil
	})
	return o
}

// Test_Engine_Takeover_SimPathContinues kills the leader running the
// Market Engine: ticks resume from the new leader within two intervals,
// every tick follows from the one before it exactly (the sim walk continues
// from the replicated state: no jump, no repeat), and stale ticks are
// refused.
func Test_Engine_Takeover_SimPathContinues(t *testing.T) {
	const interval = 500 * time.Millisecond
	c := engineCluster(t, node.FeedConfig{Kind: "sim", Interval: interval, MMSize: 10})
	old := c.Leader()
	var watcher *TNode
	for _, f := range c.Followers() {
		watcher = f
	}
	// Observe every tick on a follower that survives.
	var obs []tickObs
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last uint64
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if o := observeTick(watcher); o.seq != last {
				obs = append(obs, o)
				last = o.seq
			}
		}
	}()
	waitTick(t, watcher, 5, 10*time.Second)
	killedAt := time.Now()
	seqAtKill := observeTick(watcher).seq
	c.Kill(old)
	nl := c.Leader()
	waitTick(t, watcher, seqAtKill+1, 10*time.Second)
	gap := time.Since(killedAt)
	waitTick(t, watcher, seqAtKill+5, 10*time.Second)
	close(stop)
	<-done
	t.Logf("ticks resumed on %s %v after the kill (interval %v)", nl.ID, gap, interval)
	if gap > 2*interval {
		t.Fatalf("ticks resumed %v after the kill, more than two intervals", gap)
	}

	// Every consecutive pair observed must be one exact step of the walk.
	checked := 0
	for i := 1; i < len(obs); i++ {
		prev, cur := obs[i-1], obs[i]
		if cur.seq <= prev.seq {
			t.Fatalf("tick sequence went from %d to %d", prev.seq, cur.seq)
		}
		if cur.seq != prev.seq+1 {
			continue // missed one in between; nothing to compare
		}
		st, err := market.DecodeSimState(prev.state, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := market.SimStep(&st, prev.refs)
		for j := range want {
			if want[j] != cur.refs[j] {
				t.Fatalf("tick %d: %s = %d, the walk from tick %d gives %d", cur.seq, want[j].Symbol, cur.refs[j].Price, prev.seq, want[j].Price)
			}
		}
		if string(market.EncodeSimState(st)) != string(cur.state) {
			t.Fatalf("tick %d: feed state does not follow from tick %d", cur.seq, prev.seq)
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("only %d consecutive tick pairs observed", checked)
	}
	// A repeated or stale tick is refused by the state machine.
	cur := observeTick(nl)
	res, err := nl.Node.Apply(context.Background(), &fsm.Command{Type: fsm.TypeTick, TickSeq: cur.seq, FeedKind: "sim"})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err(), fsm.ErrStaleTick) {
		t.Fatalf("stale tick: %v", res.Err())
	}
	// The engine moved: the old leader's status no longer claims it.
	st := nl.Node.ClusterStatus(context.Background())
	if st.MarketEngine != nl.ID {
		t.Fatalf("market engine reported on %q, leader is %s", st.MarketEngine, nl.ID)
	}
	c.EnsureSame()
	checkConservation(t, nl)
}

// checkConservation: cash and shares only come from deposits; nothing is
// negative; no book is crossed.
func checkConservation(t *testing.T, tn *TNode) {
	t.Helper()
	err := tn.Node.FSM().View(func(v *fsm.View) error {
		cash, reserved, shares := v.Totals()
		if cash < 0 || reserved < 0 || reserved > cash {
			return fmt.Errorf("cash %d reserved %d", cash, reserved)
		}
		var depCash int64
		depShares := map[string]int64{}
		for id := uint64(1); id < 10_000; id++ {
			a, ok := v.Account(id)
			if !ok {
				break
			}
			if a.Cash < 0 || a.Available() < 0 {
				return fmt.Errorf("account %d: cash %s available %s", id, a.Cash, a.Available())
			}
			for _, e := range v.Statement(id, 0, 0) {
				switch e.Kind {
				case "deposit", "withdrawal":
					depCash += e.Cash
				case "share_deposit", "share_withdrawal":
					depShares[e.Symbol] += e.Qty
				}
			}
			for _, p := range v.Positions(id) {
				if p.Qty < 0 || p.Available() < 0 {
					return fmt.Errorf("account %d %s: qty %d available %d", id, p.Symbol, p.Qty, p.Available())
				}
			}
		}
		if cash != depCash {
			return fmt.Errorf("total cash %d, deposited net %d", cash, depCash)
		}
		for sym, q := range shares {
			if q != depShares[sym] {
				return fmt.Errorf("%s: %d shares held, %d deposited net", sym, q, depShares[sym])
			}
		}
		for _, in := range v.Instruments() {
			if b, ok := tn.Node.FSM().Book(in.Symbol, 1); ok && b.Crossed {
				return fmt.Errorf("%s book crossed", in.Symbol)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("conservation on %s: %v", tn.ID, err)
	}
}

// Test_Engine_HTTPFeed: good CSV and JSON rows are committed; malformed
// rows, unknown symbols and absurd jumps are counted and never committed;
// a slow or dead source leaves the node healthy.
func Test_Engine_HTTPFeed(t *testing.T) {
	var mode atomic.Value
	mode.Store("csv")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load().(string) {
		case "csv":
			fmt.Fprint(w, "symbol,price,volume\nAAPL,190.00,100\nMSFT,not-a-price\nZZZZ,10.00\nNVDA,500.00\n")
		case "json":
			fmt.Fprint(w, `[{"symbol":"AAPL","price":"191.25"},{"symbol":"MSFT","price":-4},{"symbol":"GOOGL","price":172.5}]`)
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		case "500":
			http.Error(w, "down", 500)
		}
	}))
	defer srv.Close()
	c := engineCluster(t, node.FeedConfig{Kind: "http", URL: srv.URL, Interval: 100 * time.Millisecond, BandPct: 20})
	leader := c.Leader()
	price := func(sym string) int64 {
		var p int64
		_ = leader.Node.FSM().View(func(v *fsm.View) error { in, _ := v.Instrument(sym); p = in.RefPrice; return nil })
		return p
	}
	Poll(t, 10*time.Second, "CSV price committed", func() error {
		if p := price("AAPL"); p != 19000 {
			return fmt.Errorf("AAPL at %d", p)
		}
		return nil
	})
	if p := price("NVDA"); p != 12140 {
		t.Fatalf("NVDA jumped to %d: a move beyond the band was committed", p)
	}
	if p := price("MSFT"); p != 41520 {
		t.Fatalf("MSFT changed to %d from a malformed row", p)
	}
	mode.Store("json")
	Poll(t, 10*time.Second, "JSON prices committed", func() error {
		if price("AAPL") != 19125 || price("GOOGL") != 17250 {
			return fmt.Errorf("AAPL %d GOOGL %d", price("AAPL"), price("GOOGL"))
		}
		return nil
	})
	if price("MSFT") != 41520 {
		t.Fatal("negative price committed")
	}
	es := leader.Node.Status().MarketEngine
	if es.RejectedRow == 0 {
		t.Fatalf("bad rows not counted: %+v", es)
	}
	for _, m := range []string{"slow", "500"} {
		mode.Store(m)
		before := leader.Node.Status().MarketEngine.Errors
		Poll(t, 10*time.Second, m+" source counted as errors", func() error {
			if leader.Node.Status().MarketEngine.Errors <= before+1 {
				return errors.New("no new errors yet")
			}
			return nil
		})
		// The node keeps serving writes meanwhile.
		cl := c.Client(leader)
		Trader(t, cl, "http-"+m)
	}
	srv.Close() // dead source
	cl := c.Client(leader)
	Trader(t, cl, "after-dead-feed")
	if price("AAPL") != 19125 {
		t.Fatal("price changed while the feed was failing")
	}
	c.EnsureSame()
}

// Test_Engine_FileReplay replays a price file in order.
func Test_Engine_FileReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "prices.csv")
	data := "time,symbol,price\n" +
		"2024-01-02T14:30:00Z,AAPL,185.00\n" +
		"2024-01-02T14:31:00Z,AAPL,186.00\n" +
		"2024-01-02T14:32:00Z,AAPL,187.00\n" +
		"2024-01-02T14:33:00Z,AAPL,188.00\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c := engineCluster(t, node.FeedConfig{Kind: "file", Path: path, Interval: 100 * time.Millisecond, Speed: 600, BandPct: 50})
	leader := c.Leader()
	var seen []int64
	Poll(t, 15*time.Second, "file replayed", func() error {
		var p int64
		_ = leader.Node.FSM().View(func(v *fsm.View) error { in, _ := v.Instrument("AAPL"); p = in.RefPrice; return nil })
		if len(seen) == 0 || seen[len(seen)-1] != p {
			seen = append(seen, p)
		}
		if p != 18800 {
			return fmt.Errorf("AAPL at %d", p)
		}
		return nil
	})
	// Prices seen must follow the file's order.
	order := map[int64]int{18910: 0, 18500: 1, 18600: 2, 18700: 3, 18800: 4}
	for i := 1; i < len(seen); i++ {
		if order[seen[i]] <= order[seen[i-1]] {
			t.Fatalf("replay out of order: %v", seen)
		}
	}
}
