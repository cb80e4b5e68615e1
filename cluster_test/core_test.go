package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

func mustCash(t testing.TB, cl *transport.Client, c transport.Consistency, want string) {
	t.Helper()
	a, err := cl.Account(context.Background(), c)
	if err != nil {
		t.Fatalf("account: %v", err)
	}
	if a.Cash != want {
		t.Fatalf("cash = %s, want %s", a.Cash, want)
	}
}

func Test_MultiNode_Form_Status(t *testing.T) {
	c := NewCluster(t, 3, nil)
	leader := c.Leader()
	cl := c.Client(c.Followers()[0])
	st, err := cl.ClusterStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != leader.ID || len(st.Nodes) != 3 || st.Term == 0 {
		t.Fatalf("status: %+v", st)
	}
	for _, n := range st.Nodes {
		if !n.Voter || n.HTTPAddr == "" || n.RaftAddr == "" || n.State == "unreachable" {
			t.Fatalf("node entry: %+v", n)
		}
	}
	// A dead node is shown as unreachable by the others.
	dead := c.Followers()[0]
	c.Kill(dead)
	st, err = c.Client(leader).ClusterStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.ID == dead.ID && n.State != "unreachable" {
			t.Fatalf("dead node shown as %q", n.State)
		}
	}
}

func Test_MultiNode_WriteViaFollower_ReadEverywhere(t *testing.T) {
	c := NewCluster(t, 3, nil)
	f := c.Followers()[0]
	cl := c.Client(f)
	Trader(t, cl, "alice")
	ctx := context.Background()
	if _, err := cl.Deposit(ctx, "100.25", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Withdraw(ctx, "0.25", ""); err != nil {
		t.Fatal(err)
	}
	// The session and balance are visible through every node, linearizably.
	for _, tn := range c.Nodes {
		other := c.Client(tn)
		other.SetToken(cl.Token())
		mustCash(t, other, transport.Linearizable, "100.00")
	}
	c.EnsureSame()
}

func Test_MultiNode_KillLeader_WritesContinue(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client()
	Trader(t, cl, "bob")
	ctx := context.Background()
	if _, err := cl.Deposit(ctx, "10.00", ""); err != nil {
		t.Fatal(err)
	}
	old := c.Leader()
	c.Kill(old)
	start := time.Now()
	if _, err := cl.Deposit(ctx, "5.00", ""); err != nil {
		t.Fatalf("deposit after leader kill: %v", err)
	}
	t.Logf("first write acknowledged %v after leader kill", time.Since(start))
	if nl := c.Leader(); nl == old {
		t.Fatal("old leader still leads")
	}
	mustCash(t, cl, transport.Linearizable, "15.00")
	// The old leader comes back as a follower and catches up.
	c.Restart(old)
	c.WaitReady()
	c.EnsureSame()
}

func Test_MultiNode_RestartedNodeCatchesUp_NoDoubleApply(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client()
	Trader(t, cl, "carol")
	ctx := context.Background()
	f := c.Followers()[0]
	c.Kill(f)
	for i := 0; i < 20; i++ {
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			t.Fatal(err)
		}
	}
	c.Restart(f)
	c.EnsureSame()
	// Restart with nothing new to apply: the node must apply nothing.
	c.Kill(f)
	c.Restart(f)
	c.EnsureSame()
	if n := f.Node.FSM().CommandsApplied(); n != 0 {
		t.Fatalf("restarted node re-applied %d commands", n)
	}
	mustCash(t, cl, transport.Linearizable, "20.00")
}

func Test_MultiNode_NewNodeJoinsBySnapshot(t *testing.T) {
	c := NewCluster(t, 3, func(cfg *node.Config) {
		cfg.SnapshotThreshold = 50
		cfg.TrailingLogs = 10
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	cl := c.Client()
	Trader(t, cl, "dave")
	ctx := context.Background()
	for i := 0; i < 150; i++ {
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.Leader()
	Poll(t, 10*time.Second, "leader took a snapshot", func() error {
		if leader.Node.Raft().Stats()["last_snapshot_index"] == "0" {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	n4 := c.AddNode()
	c.EnsureSame()
	if si, _ := strconv.Atoi(n4.Node.Raft().Stats()["last_snapshot_index"]); si == 0 {
		t.Fatal("new node caught up without installing a snapshot")
	}
	other := c.Client(n4)
	other.SetToken(cl.Token())
	mustCash(t, other, transport.Stale, "150.00")
}

func Test_MultiNode_IdempotentRetry_CountedOnce(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	cl := c.Client()
	Trader(t, cl, "erin")
	key := transport.NewIdempotencyKey()
	first, err := cl.Deposit(ctx, "7.00", key)
	if err != nil {
		t.Fatal(err)
	}
	// The same request through every node, as a client retrying after an
	// unknown outcome would send it.
	for _, tn := range c.Nodes {
		other := c.Client(tn)
		other.SetToken(cl.Token())
		again, err := other.Deposit(ctx, "7.00", key)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Replayed || again.Cash != first.Cash || again.AppliedIndex != first.AppliedIndex {
			t.Fatalf("retry via %s: %+v, first %+v", tn.ID, again, first)
		}
	}
	// Reusing the key for a different request is refused.
	if _, err := cl.Deposit(ctx, "8.00", key); !isCode(err, fsm.CodeIdempotencyReused) {
		t.Fatalf("key reuse: %v", err)
	}
	mustCash(t, cl, transport.Linearizable, "7.00")
	c.EnsureSame()
}

func Test_MultiNode_Join_Idempotent_SameIDRules(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	cl := c.Client()
	n2 := c.Nodes[1]
	// Rejoining with the same ID and address is a no-op.
	if err := cl.Join(ctx, transport.JoinRequest{ID: n2.ID, RaftAddr: n2.RaftAddr, HTTPAddr: n2.HTTPAddr}); err != nil {
		t.Fatalf("idempotent rejoin: %v", err)
	}
	// A second live node claiming n2's ID is refused.
	dup := &TNode{ID: n2.ID, Dir: t.TempDir(), RaftAddr: freeAddr(t), HTTPAddr: freeAddr(t)}
	cfg := c.Config(dup, []string{c.Nodes[0].HTTPAddr})
	cfg.JoinAttempts = 2
	err := c.startWith(dup, cfg)
	if !errors.Is(err, node.ErrNodeIDInUse) {
		t.Fatalf("duplicate live ID: %v", err)
	}
	// Once n2 is dead, the same ID from a new address replaces it.
	c.Kill(n2)
	moved := &TNode{ID: n2.ID, Dir: t.TempDir(), RaftAddr: freeAddr(t), HTTPAddr: freeAddr(t)}
	c.Nodes[1] = moved
	if err := c.start(moved, []string{c.Nodes[0].HTTPAddr}); err != nil {
		t.Fatalf("replace dead member: %v", err)
	}
	c.WaitReady()
	st, err := c.Client(c.Nodes[0]).ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("want 3 members, got %+v", st.Nodes)
	}
	for _, n := range st.Nodes {
		if n.ID == n2.ID && n.RaftAddr != moved.RaftAddr {
			t.Fatalf("n2 still at old address %s", n.RaftAddr)
		}
	}
	c.EnsureSame()
}

func Test_MultiNode_JoinDeadAddress_ClearError(t *testing.T) {
	c := NewCluster(t, 1, nil)
	lonely := &TNode{ID: "x1", Dir: t.TempDir(), RaftAddr: freeAddr(t), HTTPAddr: freeAddr(t)}
	dead := freeAddr(t)
	release(dead) // nothing listens there now
	cfg := c.Config(lonely, []string{dead})
	cfg.JoinAttempts = 3
	start := time.Now()
	err := c.startWith(lonely, cfg)
	if !errors.Is(err, node.ErrJoinFailed) {
		t.Fatalf("join to dead address: %v", err)
	}
	t.Logf("gave up after %v: %v", time.Since(start), err)
}

func Test_MultiNode_RemoveAndTransfer(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	leader := c.Leader()
	target := c.Followers()[0]
	if err := c.Client(c.Followers()[1]).TransferLeadership(ctx, target.ID); err != nil {
		t.Fatal(err)
	}
	Poll(t, 5*time.Second, "target leads", func() error {
		if !target.Node.IsLeader() {
			return fmt.Errorf("leader is %s", c.Leader().ID)
		}
		return nil
	})
	if err := c.Client(target).Remove(ctx, leader.ID); err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	st, err := c.Client(target).ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 2 {
		t.Fatalf("after remove: %+v", st.Nodes)
	}
	if err := c.Client(target).Remove(ctx, "nope"); !errors.Is(err, transport.ErrNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}
	c.EnsureSame()
}

func Test_MultiNode_GracefulLeaderStop_HandsOver(t *testing.T) {
	c := NewCluster(t, 3, nil)
	leader := c.Leader()
	c.Stop(leader)
	nl := c.Leader()
	if nl == leader {
		t.Fatal("no new leader")
	}
	c.EnsureSame()
}
