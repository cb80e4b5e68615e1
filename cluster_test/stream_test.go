package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// Test_Stream_ResumeAfterServerDies: a trader watches trades, quotes and
// their own orders through one node; that node dies mid-stream; the client
// resumes on another node and, in the end, has seen every event of every
// stream exactly once, in order.
func Test_Stream_ResumeAfterServerDies(t *testing.T) {
	c := NewCluster(t, 3, func(cfg *node.Config) {
		cfg.Feed = node.FeedConfig{Kind: "sim", Interval: 100 * time.Millisecond, MMSize: 5, MMSpreadBps: 20}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watcher := c.Client()
	alice := Trader(t, watcher, "alice")
	// The stream is served by the trader's assigned Trading Server.
	assignedID, _ := watcher.Assigned()
	var served *TNode
	for _, tn := range c.Nodes {
		if tn.ID == assignedID {
			served = tn
		}
	}
	if served == nil {
		t.Fatalf("no assigned Trading Server (got %q)", assignedID)
	}
	if _, err := watcher.Deposit(ctx, "100000.00", ""); err != nil {
		t.Fatal(err)
	}
	var others []*TNode
	for _, tn := range c.Nodes {
		if tn != served {
			others = append(others, tn)
		}
	}
	trader := c.Client(others...)
	trader.SetToken(watcher.Token())

	type seen struct {
		mu     sync.Mutex
		seqs   map[string][]uint64
		nodes  map[string]bool
		events int
	}
	s := &seen{seqs: map[string][]uint64{}, nodes: map[string]bool{}}
	werr := make(chan error, 1)
	go func() {
		werr <- watcher.Watch(ctx, transport.WatchRequest{Symbols: []string{"AAPL"}, Orders: true}, func(ev transport.StreamEvent) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.seqs[ev.Stream] = append(s.seqs[ev.Stream], ev.Seq)
			s.nodes[ev.FromNode] = true
			s.events++
			return nil
		})
	}()
	count := func(stream string) int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.seqs[stream])
	}
	Poll(t, 15*time.Second, "stream delivers quotes", func() error {
		if count("q.AAPL") < 3 {
			return errors.New("no quotes yet")
		}
		return nil
	})
	const orders = 30
	for i := 0; i < orders; i++ {
		if i == orders/2 {
			Poll(t, 15*time.Second, "stream delivered the first trades", func() error {
				if count("t.AAPL") < 5 {
					return fmt.Errorf("%d trades seen", count("t.AAPL"))
				}
				return nil
			})
			c.Kill(served) // the watcher's node dies mid-stream
		}
		if _, err := trader.PlaceOrder(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Type: "market", TIF: "ioc", Quantity: 1}); err != nil {
			var rej *transport.OrderRejectedError
			if !errors.As(err, &rej) {
				t.Fatalf("order %d: %v", i, err)
			}
		}
	}
	// Everything committed must arrive.
	survivor := c.Leader()
	var lastTrade, lastOrderEv uint64
	_ = survivor.Node.FSM().View(func(v *fsm.View) error {
		st, _ := v.BookStats("AAPL")
		lastTrade = st.TradeSeq
		lastOrderEv = v.LastOrderEvent(alice.AccountID)
		return nil
	})
	Poll(t, 20*time.Second, "stream caught up after failover", func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		tr, or := s.seqs["t.AAPL"], s.seqs["o"]
		if len(tr) == 0 || tr[len(tr)-1] < lastTrade || len(or) == 0 || or[len(or)-1] < lastOrderEv {
			return fmt.Errorf("trades up to %v of %d, order events up to %v of %d", tail(tr), lastTrade, tail(or), lastOrderEv)
		}
		return nil
	})
	cancel()
	<-werr
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.seqs["o"]); n < orders {
		t.Fatalf("%d order events for %d orders", n, orders)
	}
	for stream, seqs := range s.seqs {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] != seqs[i-1]+1 {
				t.Fatalf("%s: after %d came %d (gap or repeat): %v", stream, seqs[i-1], seqs[i], seqs)
			}
		}
	}
	if len(s.nodes) < 2 {
		t.Fatalf("events came from %v only: no failover happened", s.nodes)
	}
	t.Logf("%d events from nodes %v; trades %d, order events %d, quotes %d", s.events, s.nodes, len(s.seqs["t.AAPL"]), len(s.seqs["o"]), len(s.seqs["q.AAPL"]))
	c.EnsureSame()
}

func tail(s []uint64) any {
	if len(s) == 0 {
		return "none"
	}
	return s[len(s)-1]
}
