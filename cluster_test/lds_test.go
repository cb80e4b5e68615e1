package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// gossipCluster starts n nodes, each with a gossip address, and waits until
// every node's LDS view shows all of them healthy.
func gossipCluster(t *testing.T, n int) *Cluster {
	gossipAddrs := map[string]string{}
	var mu sync.Mutex
	c := NewCluster(t, n, func(cfg *node.Config) {
		mu.Lock()
		defer mu.Unlock()
		if gossipAddrs[cfg.ID] == "" {
			gossipAddrs[cfg.ID] = freeAddr(t)
		}
		cfg.GossipAddr = gossipAddrs[cfg.ID]
	})
	waitGossipHealthy(t, c, n)
	return c
}

// waitGossipHealthy polls until every live node's LDS view shows n
// healthy members.
func waitGossipHealthy(t *testing.T, c *Cluster, n int) {
	t.Helper()
	Poll(t, 15*time.Second, "every LDS sees every node healthy", func() error {
		for _, tn := range c.Live() {
			healthy := 0
			for _, m := range tn.Node.Members() {
				if m.Healthy {
					healthy++
				}
			}
			if healthy != n {
				return fmt.Errorf("%s sees %d healthy of %d: %+v", tn.ID, healthy, n, tn.Node.Members())
			}
		}
		return nil
	})
}

func assignments(tn *TNode) map[string]int64 {
	var a map[string]int64
	_ = tn.Node.FSM().View(func(v *fsm.View) error { a = v.Assignments(); return nil })
	return a
}

// Test_LDS_SpreadAndRedistribute: 30 traders log in and are spread over the
// three Trading Servers; one server dies; every trader carries on with the
// same session, and the dead server's traders spread over the survivors.
func Test_LDS_SpreadAndRedistribute(t *testing.T) {
	const traders = 30
	c := gossipCluster(t, 3)
	ctx := context.Background()
	clients := make([]*transport.Client, traders)
	count := map[string]int{}
	for i := range clients {
		clients[i] = c.Client()
		name := fmt.Sprintf("trader%02d", i)
		if _, err := clients[i].Register(ctx, transport.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
			t.Fatal(err)
		}
		lr, err := clients[i].Login(ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		if lr.Node == "" || lr.NodeAddr == "" || len(lr.Servers) < 2 {
			t.Fatalf("login assignment: node %q addr %q servers %d", lr.Node, lr.NodeAddr, len(lr.Servers))
		}
		count[lr.Node]++
	}
	for id, n := range count {
		if n > 12 {
			t.Fatalf("%s was assigned %d of %d sessions: %v", id, n, traders, count)
		}
	}
	t.Logf("initial spread: %v", count)
	tokens := make([]string, traders)
	for i, cl := range clients {
		tokens[i] = cl.Token()
		if _, err := cl.Deposit(ctx, "10.00", ""); err != nil {
			t.Fatal(err)
		}
		who, err := cl.WhoAmI(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := cl.Assigned(); who.Node != id {
			t.Fatalf("whoami node %s, client assigned %s", who.Node, id)
		}
	}

	// Kill the server with the most sessions.
	var victim *TNode
	for _, tn := range c.Nodes {
		if victim == nil || count[tn.ID] > count[victim.ID] {
			victim = tn
		}
	}
	killed := time.Now()
	c.Kill(victim)
	Poll(t, 10*time.Second, "survivors see the dead server leave", func() error {
		for _, tn := range c.Live() {
			for _, m := range tn.Node.Members() {
				if m.ID == victim.ID && m.Health != "dead" {
					return fmt.Errorf("%s sees %s as %s", tn.ID, victim.ID, m.Health)
				}
			}
		}
		return nil
	})
	gone := time.Since(killed)
	t.Logf("%s left the LDS view %v after dying", victim.ID, gone)
	if gone > 3*time.Second {
		t.Fatalf("a dead Trading Server stayed in the LDS view for %v", gone)
	}

	for i, cl := range clients {
		a, err := cl.Deposit(ctx, "1.00", "")
		if err != nil {
			t.Fatalf("trader %d after the kill: %v", i, err)
		}
		if a.Cash != "11.00" {
			t.Fatalf("trader %d cash %s", i, a.Cash)
		}
		if cl.Token() != tokens[i] {
			t.Fatalf("trader %d logged in again", i)
		}
		if id, _ := cl.Assigned(); id == victim.ID {
			t.Fatalf("trader %d still assigned to the dead %s", i, id)
		}
	}
	survivor := c.Live()[0]
	Poll(t, 10*time.Second, "assignments moved off the dead server", func() error {
		a := assignments(survivor)
		if a[victim.ID] != 0 {
			return fmt.Errorf("%s still has %d: %v", victim.ID, a[victim.ID], a)
		}
		total := int64(0)
		for id, n := range a {
			total += n
			if n > 18 {
				return fmt.Errorf("%s has %d sessions: %v", id, n, a)
			}
		}
		if total != traders {
			return fmt.Errorf("%d sessions assigned, want %d: %v", total, traders, a)
		}
		return nil
	})
	t.Logf("after redistribution: %v", assignments(survivor))
	c.EnsureSame()
}

// rogueMeta is a gossip delegate that advertises a made-up Trading Server.
type rogueMeta struct{ meta []byte }

func (d rogueMeta) NodeMeta(int) []byte               { return d.meta }
func (rogueMeta) NotifyMsg([]byte)                    {}
func (rogueMeta) GetBroadcasts(int, int) [][]byte     { return nil }
func (rogueMeta) LocalState(bool) []byte              { return nil }
func (rogueMeta) MergeRemoteState(buf []byte, _ bool) {}

// Test_LDS_GossipDoesNotNameServers: a gossip member that is not a Raft
// voter at the address the replicated state records gets no clients,
// however healthy and idle it says it is. The rogue sorts before every
// real node and claims no sessions, so the LDS would pick it first if it
// believed gossip about who serves where.
func Test_LDS_GossipDoesNotNameServers(t *testing.T) {
	c := gossipCluster(t, 3)
	var gossipAt string
	for _, m := range c.Nodes[0].Node.Members() {
		if m.ID == c.Nodes[0].ID {
			gossipAt = m.GossipAddr
		}
	}
	{
		rogue := struct{ name, http string }{"a-rogue", "127.0.0.1:1"}
		meta := fmt.Sprintf(`{"id":%q,"http":%q,"roles":["TS"],"raft":"Follower","healthy":true,"sessions":0,"rps":0}`, rogue.name, rogue.http)
		mc := memberlist.DefaultLANConfig()
		mc.Name, mc.BindAddr, mc.BindPort = rogue.name, "127.0.0.1", 0
		mc.Logger = log.New(io.Discard, "", 0)
		mc.Delegate = rogueMeta{[]byte(meta)}
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		defer ml.Shutdown()
		if _, err := ml.Join([]string{gossipAt}); err != nil {
			t.Fatal(err)
		}
	}
	Poll(t, 10*time.Second, "every LDS sees the rogue alive", func() error {
		for _, tn := range c.Live() {
			seen := false
			for _, m := range tn.Node.Members() {
				seen = seen || (m.ID == "a-rogue" && m.Healthy)
			}
			if !seen {
				return fmt.Errorf("%s does not see a-rogue", tn.ID)
			}
		}
		return nil
	})
	ctx := context.Background()
	for i := range 6 {
		cl := c.Client(c.Nodes[i%3])
		name := fmt.Sprintf("gossip-victim%d", i)
		if _, err := cl.Register(ctx, transport.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
			t.Fatal(err)
		}
		lr, err := cl.Login(ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		if lr.Node == "a-rogue" || lr.NodeAddr == "127.0.0.1:1" {
			t.Fatalf("login %d assigned to the rogue gossip member: %+v", i, lr)
		}
		for _, s := range lr.Servers {
			if s.ID == "a-rogue" {
				t.Fatalf("login %d offers the rogue as a server: %+v", i, lr.Servers)
			}
		}
	}
	c.EnsureSame()
}
