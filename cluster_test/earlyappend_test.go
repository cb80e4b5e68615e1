package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"
)

// earlyCounts is a node's early append counters.
func earlyCounts(tn *TNode) (sent, accepted uint64) {
	st := tn.Node.Status()
	return st.EarlyAppendsSent, st.EarlyAppendsAccepted
}

// waitEarlyAnswered waits until every early request the node sent has been
// answered and accepted, and returns how many it sent.
func waitEarlyAnswered(t *testing.T, tn *TNode) uint64 {
	t.Helper()
	var sent uint64
	Poll(t, 10*time.Second, tn.ID+"'s early appends accepted", func() error {
		s, a := earlyCounts(tn)
		if a != s {
			return fmt.Errorf("%d sent, %d accepted", s, a)
		}
		sent = s
		return nil
	})
	return sent
}

// Test_EarlyAppend_SequentialWrites: one write at a time, the leader sends
// each new entry to both followers while it writes it, the followers take
// every one, and the cluster ends identical. With a follower down the
// leader stops sending to it and writes go on; a new leader does the same;
// followers never send.
func Test_EarlyAppend_SequentialWrites(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "early")
	leader := c.Leader()
	const writes = 40
	before := waitEarlyAnswered(t, leader)
	answered := leader.Node.Status().EarlyAnswers
	depositConcurrently(t, leader, acct.AccountID, 1, writes)
	sent := waitEarlyAnswered(t, leader) - before
	answered = leader.Node.Status().EarlyAnswers - answered
	t.Logf("%d sequential writes: %d early requests, all accepted; %d of Raft's requests answered by them", writes, sent, answered)
	// Each write is one entry. The follower whose answer committed the
	// entry before is known to hold it when the next is dispatched; the
	// other's answer may still be on its way, and then it gets the entry
	// from its replicator as before. So at least one per write.
	if sent < writes {
		t.Fatalf("%d early requests for %d writes to two followers", sent, writes)
	}
	// Raft's own request for an entry an early request carried is
	// answered with the early answer, unless that answer came more than
	// earlyAnswerMaxAge (10 ms) before it: rare, but a slow fsync under
	// the race detector can do it.
	if answered < writes/2 {
		t.Fatalf("%d of Raft's requests answered by early answers for %d writes", answered, writes)
	}
	for _, f := range c.Followers() {
		if s, _ := earlyCounts(f); s != 0 {
			t.Fatalf("follower %s sent %d early requests", f.ID, s)
		}
	}

	// One follower down: early requests to it fail once, then stop.
	down := c.Followers()[0]
	c.Kill(down)
	before = waitEarlyAnswered(t, leader)
	depositConcurrently(t, leader, acct.AccountID, 1, writes)
	s, a := earlyCounts(leader)
	t.Logf("with %s down: %d more sent, %d more accepted", down.ID, s-before, a-before)
	if s-before > writes+2 {
		t.Fatalf("%d early requests for %d writes with one follower down", s-before, writes)
	}
	if a-before < writes/2 {
		t.Fatalf("only %d early requests accepted for %d writes", a-before, writes)
	}
	c.Restart(down)
	c.WaitReady()

	// A new leader sends early too.
	if err := leader.Node.Raft().LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	next := c.Leader()
	if next == leader {
		t.Fatal("leadership did not move")
	}
	before = waitEarlyAnswered(t, next)
	depositConcurrently(t, next, acct.AccountID, 1, writes)
	if sent := waitEarlyAnswered(t, next) - before; sent < writes {
		t.Fatalf("new leader %s: %d early requests for %d writes", next.ID, sent, writes)
	}
	wantCash(t, cl, "1.20")
	c.EnsureSame()
}

// Test_EarlyAppend_Off: with early append off, no node sends early.
func Test_EarlyAppend_Off(t *testing.T) {
	c := NewCluster(t, 3, func(cfg *node.Config) { cfg.NoEarlyAppend = true })
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "late")
	depositConcurrently(t, c.Leader(), acct.AccountID, 1, 20)
	for _, tn := range c.Live() {
		if s, _ := earlyCounts(tn); s != 0 {
			t.Fatalf("%s sent %d early requests with early append off", tn.ID, s)
		}
	}
	wantCash(t, cl, "0.20")
	c.EnsureSame()
}
