package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// Test_RollingUpgrade_Rules: a rolling upgrade from a release that
// applies state-machine rules version 1 to one that applies version 2
// (node.Config.MaxRules stands in for the old release). While any member
// runs the old release the cluster keeps rules 1 (a stop-limit order may
// carry a limit beyond the collar) and the leader's status says which
// member holds the raise back; once the last node is upgraded the leader
// raises the rules, every node reports them, and the same order is now
// rejected, while the one accepted before stays. An old-release node can
// no longer join, and every node ends with the same state.
func Test_RollingUpgrade_Rules(t *testing.T) {
	var mu sync.Mutex
	release := map[string]uint64{"n1": fsm.RulesBase, "n2": fsm.RulesBase, "n3": fsm.RulesBase, "n4": fsm.RulesBase}
	c := NewCluster(t, 3, func(cfg *node.Config) {
		cfg.Feed.Kind = "none"
		mu.Lock()
		cfg.MaxRules = release[cfg.ID]
		mu.Unlock()
	})
	ctx := context.Background()
	cl := c.Client()
	Trader(t, cl, "upgrader")
	if _, err := cl.Deposit(ctx, "100000.00", ""); err != nil {
		t.Fatal(err)
	}
	// AAPL's reference is 189.10: a buy stop at 190.00 collars its limit
	// at 209.00.
	wide := transport.OrderRequest{Symbol: "AAPL", Side: "buy", Type: "stop_limit", Quantity: 1, StopPrice: "190.00", LimitPrice: "250.00"}
	rulesEverywhere := func(want uint64) func() error {
		return func() error {
			for _, tn := range c.Live() {
				if st := tn.Node.Status(); st.Rules != want {
					return fmt.Errorf("%s at rules %d (max %d)", tn.ID, st.Rules, st.MaxRules)
				}
			}
			return nil
		}
	}
	Poll(t, 10*time.Second, "rules 1 on the old release", rulesEverywhere(fsm.RulesBase))
	before, err := cl.PlaceOrder(ctx, wide)
	if err != nil || before.Status != transport.StatusOpen {
		t.Fatalf("a stop-limit beyond the collar on the old release: %+v, %v", before, err)
	}

	upgrade := func(tn *TNode) {
		t.Helper()
		c.Stop(tn)
		mu.Lock()
		release[tn.ID] = 0 // this release: fsm.SupportedRules
		mu.Unlock()
		c.Restart(tn)
		c.WaitReady()
	}
	// Upgrade a follower, then the leader (which hands leadership over
	// as it stops); lead from an upgraded node, so that it is the one
	// that would raise the rules, with the other follower still old.
	fs := c.Followers()
	first, second, last := fs[0], c.Leader(), fs[1]
	upgrade(first)
	upgrade(second)
	if l := c.Leader(); l == last {
		if err := l.Node.TransferLeadership(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		Poll(t, 10*time.Second, "an upgraded leader", func() error {
			if l := c.Leader(); l == nil || l == last {
				return errors.New("the old-release node still leads")
			}
			return nil
		})
	}
	Poll(t, 20*time.Second, "the leader names the member on the old release", func() error {
		l := c.Leader()
		if l == nil {
			return errors.New("no leader")
		}
		if st := l.Node.Status(); !strings.Contains(st.RulesPending, "member "+last.ID+" applies up to 1") {
			return fmt.Errorf("leader %s: rules_pending %q", l.ID, st.RulesPending)
		}
		return nil
	})
	if err := rulesEverywhere(fsm.RulesBase)(); err != nil {
		t.Fatalf("rules raised with %s still on the old release: %v", last.ID, err)
	}
	if o, err := cl.PlaceOrder(ctx, wide); err != nil || o.Status != transport.StatusOpen {
		t.Fatalf("a stop-limit beyond the collar in the mixed cluster: %+v, %v", o, err)
	}

	upgrade(last)
	Poll(t, 20*time.Second, "rules 2 on every node", rulesEverywhere(fsm.RulesStopLimitCollar))
	if st := c.Leader().Node.Status(); st.RulesPending != "" || st.MaxRules != fsm.SupportedRules {
		t.Fatalf("leader status after the upgrade: pending %q, max %d", st.RulesPending, st.MaxRules)
	}
	o, err := cl.PlaceOrder(ctx, wide)
	mustRejected(t, o, err, fsm.CodeBeyondCollar)
	if o, err := cl.Order(ctx, before.OrderID); err != nil || o.Status != transport.StatusOpen {
		t.Fatalf("the stop-limit placed before the upgrade: %+v, %v", o, err)
	}

	// An old-release node cannot join a cluster at rules 2.
	old := c.newTNode()
	old.ID = "n4"
	err = c.start(old, c.Addrs())
	if !errors.Is(err, node.ErrIncompatible) || !strings.Contains(err.Error(), "applies state-machine rules up to version 1") {
		t.Fatalf("an old-release node's join: %v, want ErrIncompatible", err)
	}
	if st, err := cl.ClusterStatus(ctx); err != nil || len(st.Nodes) != 3 {
		t.Fatalf("members after the refused join: %+v, %v", st, err)
	}
	c.EnsureSame()
}

// Test_NewClusterStartsAtItsRules: a new cluster has no member on an
// older release, so it is at this release's rules by the time its leader
// serves: no window with the base rules.
func Test_NewClusterStartsAtItsRules(t *testing.T) {
	c := NewCluster(t, 1, func(cfg *node.Config) { cfg.Feed.Kind = "none" })
	if st := c.Leader().Node.Status(); st.Rules != fsm.SupportedRules || st.MaxRules != fsm.SupportedRules {
		t.Fatalf("a new cluster's rules: %d (max %d), want %d", st.Rules, st.MaxRules, fsm.SupportedRules)
	}
}
