package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hats-trading/hats/transport"
)

// Test_OrderStream_Pipelined: orders pipelined on one connection are each
// answered once, share Raft entries, and a repeated client ID returns the
// first order.
func Test_OrderStream_Pipelined(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	cl := c.Client(c.Followers()[0])
	Trader(t, cl, "streamer")
	if _, err := cl.Deposit(ctx, "1000000.00", ""); err != nil {
		t.Fatal(err)
	}
	Poll(t, 10e9, "instruments committed", func() error {
		syms, err := cl.Symbols(ctx)
		if err != nil || len(syms.Symbols) == 0 {
			return fmt.Errorf("symbols: %v", err)
		}
		return nil
	})
	os, err := cl.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Close()
	leader := c.Leader()
	before := leader.Node.Raft().LastIndex()
	const workers, each = 8, 25
	var mu sync.Mutex
	ids := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				cid := fmt.Sprintf("s-%d-%d", w, i)
				o, err := os.Place(ctx, transport.OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "150.00"})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := ids[o.OrderID]; dup {
					t.Errorf("order %d answered for %s and %s", o.OrderID, prev, cid)
				}
				ids[o.OrderID] = cid
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if len(ids) != workers*each {
		t.Fatalf("%d distinct orders for %d requests", len(ids), workers*each)
	}
	entries := leader.Node.Raft().LastIndex() - before
	t.Logf("%d pipelined orders in %d Raft entries", workers*each, entries)
	// A repeated client ID returns the first order.
	again, err := os.Place(ctx, transport.OrderRequest{ClientID: "s-0-0", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "150.00"})
	if err != nil || !again.Replayed || ids[again.OrderID] != "s-0-0" {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	// Bad requests are answered with an error and change nothing.
	if _, err := os.Place(ctx, transport.OrderRequest{Symbol: "NOPE", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"}); err == nil {
		t.Fatal("unknown symbol accepted")
	}
	var ae *transport.APIError
	if _, err := os.Place(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 0, LimitPrice: "1.00"}); !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("zero quantity: %v", err)
	}
	// Cancel through the stream.
	for id := range ids {
		o, err := os.Cancel(ctx, id)
		if err != nil || o.Status != "cancelled" {
			t.Fatalf("cancel %d: %+v %v", id, o, err)
		}
		break
	}
	open, err := cl.Orders(ctx, transport.OrdersQuery{Open: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(open.Orders) != workers*each-1 {
		t.Fatalf("%d open orders, want %d", len(open.Orders), workers*each-1)
	}
	c.EnsureSame()
}
