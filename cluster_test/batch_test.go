package cluster_test

import (
	"context"
	"sync"
	"testing"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Test_GroupCommit_SharesEntries: commands arriving together at the leader
// share Raft entries, each still gets its own result, and nothing is lost.
func Test_GroupCommit_SharesEntries(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "batcher")
	leader := c.Leader()
	const workers, each = 64, 20
	before := leader.Node.Raft().LastIndex()
	depositConcurrently(t, leader, acct.AccountID, workers, each)
	entries := leader.Node.Raft().LastIndex() - before
	t.Logf("%d commands in %d Raft entries", workers*each, entries)
	if entries >= workers*each {
		t.Fatalf("no batching: %d entries for %d commands", entries, workers*each)
	}
	wantCash(t, cl, "12.80") // workers*each deposits of 0.01
	c.EnsureSame()
}

// Test_ForwardBatching_SharesRequests: writes arriving together at a
// follower travel to the leader in shared requests, each with its own
// result, nothing lost or applied twice.
func Test_ForwardBatching_SharesRequests(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "forwarder")
	follower := c.Followers()[0]
	const workers, each = 64, 20
	reqBefore, cmdBefore := follower.Node.ForwardStats()
	depositConcurrently(t, follower, acct.AccountID, workers, each)
	req, cmds := follower.Node.ForwardStats()
	req, cmds = req-reqBefore, cmds-cmdBefore
	t.Logf("%d forwarded commands in %d requests", cmds, req)
	if cmds != workers*each {
		t.Fatalf("follower forwarded %d commands, want %d", cmds, workers*each)
	}
	if req >= cmds {
		t.Fatalf("no batching: %d requests for %d commands", req, cmds)
	}
	wantCash(t, cl, "12.80") // workers*each deposits of 0.01
	c.EnsureSame()
}

// depositConcurrently has workers goroutines each apply each 0.01
// deposits to acct through nd, and fails the test on any error.
func depositConcurrently(t *testing.T, nd *TNode, acct uint64, workers, each int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := nd.Node.Apply(context.Background(), &fsm.Command{Type: fsm.TypeDeposit, Account: acct, Amount: 1})
				if err == nil {
					err = res.Err()
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// wantCash checks the trader's cash with a linearizable read.
func wantCash(t *testing.T, cl *transport.Client, want string) {
	t.Helper()
	a, err := cl.Account(context.Background(), "linearizable")
	if err != nil {
		t.Fatal(err)
	}
	if a.Cash != want {
		t.Fatalf("cash %s, want %s", a.Cash, want)
	}
}
