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
