package cluster_test

import (
	"context"
	"sync"
	"testing"

	"github.com/hats-trading/hats/fsm"
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
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := leader.Node.Apply(context.Background(), &fsm.Command{Type: fsm.TypeDeposit, Account: acct.AccountID, Amount: 1})
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
	entries := leader.Node.Raft().LastIndex() - before
	t.Logf("%d commands in %d Raft entries", workers*each, entries)
	if entries >= workers*each {
		t.Fatalf("no batching: %d entries for %d commands", entries, workers*each)
	}
	a, err := cl.Account(context.Background(), "linearizable")
	if err != nil {
		t.Fatal(err)
	}
	if a.Cash != "12.80" {
		t.Fatalf("cash %s, want 12.80 (%d deposits of 0.01)", a.Cash, workers*each)
	}
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
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := follower.Node.Apply(context.Background(), &fsm.Command{Type: fsm.TypeDeposit, Account: acct.AccountID, Amount: 1})
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
	req, cmds := follower.Node.ForwardStats()
	req, cmds = req-reqBefore, cmds-cmdBefore
	t.Logf("%d forwarded commands in %d requests", cmds, req)
	if cmds != workers*each {
		t.Fatalf("follower forwarded %d commands, want %d", cmds, workers*each)
	}
	if req >= cmds {
		t.Fatalf("no batching: %d requests for %d commands", req, cmds)
	}
	a, err := cl.Account(context.Background(), "linearizable")
	if err != nil {
		t.Fatal(err)
	}
	if a.Cash != "12.80" {
		t.Fatalf("cash %s, want 12.80 (%d deposits of 0.01)", a.Cash, workers*each)
	}
	c.EnsureSame()
}
