package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Test_Exchange_KillLeaderMidBurst: traders place a burst of orders with
// client order IDs while the leader is killed. Every order whose outcome
// was unknown is resolved by its client ID; in the end every acknowledged
// order exists exactly once, nothing else does, money and shares are
// conserved and all nodes agree.
func Test_Exchange_KillLeaderMidBurst(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	setup := c.Client()
	WaitInstruments(t, setup)
	const traders, perTrader = 4, 40
	clients := make([]*transport.Client, traders)
	accounts := make([]uint64, traders)
	for i := range clients {
		clients[i] = c.Client()
		a := Trader(t, clients[i], fmt.Sprintf("burst%d", i))
		accounts[i] = a.AccountID
		if _, err := clients[i].Deposit(ctx, "100000.00", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := clients[i].DepositShares(ctx, "AAPL", 1000, ""); err != nil {
			t.Fatal(err)
		}
	}
	type rec struct {
		cid     string
		acked   bool
		unknown bool
	}
	recs := make([][]rec, traders)
	var wg sync.WaitGroup
	started := make(chan struct{})
	var once sync.Once
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < perTrader; j++ {
				if j == 5 {
					once.Do(func() { close(started) })
				}
				side := "buy"
				if (i+j)%2 == 1 {
					side = "sell"
				}
				r := rec{cid: fmt.Sprintf("burst-%d-%d", i, j)}
				_, err := clients[i].PlaceOrder(ctx, transport.OrderRequest{ClientID: r.cid, Symbol: "AAPL", Side: side, Type: "limit", TIF: "gtc", Quantity: 1 + int64(j%3), LimitPrice: fmt.Sprintf("%d.00", 186+(i+j)%6)})
				var rej *transport.OrderRejectedError
				switch {
				case err == nil, errors.As(err, &rej):
					r.acked = true // a stored rejection is a definite, recorded answer too
				case errors.Is(err, transport.ErrOutcomeUnknown):
					r.unknown = true
				}
				recs[i] = append(recs[i], r)
			}
		}(i)
	}
	<-started
	old := c.Leader()
	c.Kill(old)
	wg.Wait()
	c.Restart(old)
	c.WaitReady()

	unknown := 0
	for i := range recs {
		for k, r := range recs[i] {
			if !r.unknown {
				continue
			}
			unknown++
			// Resolve by client ID, never by guessing.
			if o, err := clients[i].OrderByClientID(ctx, r.cid); err == nil && o != nil {
				recs[i][k].acked = true
			} else if !errors.Is(err, transport.ErrNotFound) {
				t.Fatalf("resolve %s: %v", r.cid, err)
			}
		}
	}
	c.EnsureSame()
	leader := c.Leader()
	err := leader.Node.FSM().View(func(v *fsm.View) error {
		for i := range recs {
			present := map[string]int{}
			for _, o := range v.Orders(accounts[i], false, "", 0) {
				present[o.ClientID]++
			}
			for _, r := range recs[i] {
				n := present[r.cid]
				if n > 1 {
					return fmt.Errorf("%s applied %d times", r.cid, n)
				}
				if r.acked && n != 1 {
					return fmt.Errorf("acknowledged order %s is missing", r.cid)
				}
				if !r.acked && !r.unknown && n != 0 {
					return fmt.Errorf("failed order %s exists", r.cid)
				}
				delete(present, r.cid)
			}
			if len(present) != 0 {
				return fmt.Errorf("orders nobody attempted: %v", present)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d orders, %d with unknown outcome resolved by client ID", traders*perTrader, unknown)
	checkConservation(t, leader)
}
