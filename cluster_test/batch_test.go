package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/trader"
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
// follower travel to the leader in shared requests on one forward stream,
// each with its own result, nothing lost or applied twice.
func Test_ForwardBatching_SharesRequests(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "forwarder")
	follower := c.Followers()[0]
	const workers, each = 64, 20
	before := follower.Node.ForwardStats()
	depositConcurrently(t, follower, acct.AccountID, workers, each)
	after := follower.Node.ForwardStats()
	req, cmds := after.Requests-before.Requests, after.Commands-before.Commands
	t.Logf("%d forwarded commands in %d requests; %d streams opened in all", cmds, req, after.Streams)
	if cmds != workers*each {
		t.Fatalf("follower forwarded %d commands, want %d", cmds, workers*each)
	}
	if req >= cmds {
		t.Fatalf("no batching: %d requests for %d commands", req, cmds)
	}
	if after.Plain != 0 || after.Streams != 1 {
		t.Fatalf("forwarding used %d streams and %d plain requests, want one stream", after.Streams, after.Plain)
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

// Test_ForwardStream_FollowsTheLeader: a follower's forward stream goes
// to whichever node leads. After a leadership transfer the follower opens
// a stream to the new leader; after that leader is killed (its streams
// break mid-flight) it opens another to the next. Every write that
// reports success is applied exactly once, the ones whose outcome is
// unknown are counted, and the nodes end identical.
func Test_ForwardStream_FollowsTheLeader(t *testing.T) {
	c := NewCluster(t, 3, nil)
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "follows")
	fol, other := c.Followers()[0], c.Followers()[1]
	const workers, each = 16, 10
	depositConcurrently(t, fol, acct.AccountID, workers, each)
	if st := fol.Node.ForwardStats(); st.Streams != 1 || st.Plain != 0 {
		t.Fatalf("before the transfer: %+v, want one stream", st)
	}

	if err := c.Client(other).TransferLeadership(t.Context(), other.ID); err != nil {
		t.Fatal(err)
	}
	Poll(t, 10*time.Second, "the other follower leads", func() error {
		if !other.Node.IsLeader() {
			return fmt.Errorf("leader is %v", c.Leader())
		}
		return nil
	})
	depositConcurrently(t, fol, acct.AccountID, workers, each)
	if st := fol.Node.ForwardStats(); st.Streams != 2 || st.Plain != 0 {
		t.Fatalf("after the transfer: %+v, want a second stream", st)
	}

	// Kill the leader while the follower forwards: writes in flight on
	// its stream end as outcome unknown or succeed after a retry; none
	// may be applied twice.
	var ok, unknown atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := fol.Node.Apply(ctx, &fsm.Command{Type: fsm.TypeDeposit, Account: acct.AccountID, Amount: 1})
				cancel()
				switch {
				case err == nil && res.Err() == nil:
					ok.Add(1)
				case errors.Is(err, node.ErrOutcomeUnknown):
					unknown.Add(1)
				default:
					t.Errorf("deposit: %v / %v", err, res)
					return
				}
			}
		}()
	}
	Poll(t, 10*time.Second, "writes flowing", func() error {
		if ok.Load() < 20 {
			return fmt.Errorf("%d acknowledged", ok.Load())
		}
		return nil
	})
	c.Kill(other)
	atKill := ok.Load()
	Poll(t, 15*time.Second, "writes acknowledged after the kill", func() error {
		if fol.Node.ForwardStats().Streams < 3 && !fol.Node.IsLeader() {
			return errors.New("no new stream yet")
		}
		if ok.Load() < atKill+20 {
			return fmt.Errorf("%d acknowledged since the kill", ok.Load()-atKill)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	st := fol.Node.ForwardStats()
	t.Logf("%d acknowledged, %d unknown; %+v", ok.Load(), unknown.Load(), st)
	if st.Plain != 0 {
		t.Fatalf("plain requests to a leader that serves streams: %+v", st)
	}
	// Acknowledged deposits all applied; unknown ones at most once each.
	a, err := cl.Account(context.Background(), "linearizable")
	if err != nil {
		t.Fatal(err)
	}
	got, err := trader.ParseCents(a.Cash)
	if err != nil {
		t.Fatal(err)
	}
	base := int64(2 * workers * each)
	if lo, hi := base+ok.Load(), base+ok.Load()+unknown.Load(); int64(got) < lo || int64(got) > hi {
		t.Fatalf("cash %d cents, want between %d and %d", got, lo, hi)
	}
	c.EnsureSame()
}

// Test_ForwardStream_PlainFallback: a leader that answers 404 to the
// forward-stream upgrade (a node from before forward streams) gets plain
// apply-batch requests, with the same results and nothing applied twice.
func Test_ForwardStream_PlainFallback(t *testing.T) {
	c := NewCluster(t, 3, nil)
	for _, tn := range c.Nodes {
		tn.Hide.Store(transport.PathInternalForwardStream, true)
	}
	cl := c.Client(c.Leader())
	acct := Trader(t, cl, "plain")
	fol := c.Followers()[0]
	before := fol.Node.ForwardStats()
	depositConcurrently(t, fol, acct.AccountID, 16, 10)
	st := fol.Node.ForwardStats()
	t.Logf("%+v", st)
	if st.Streams != before.Streams || st.Plain-before.Plain != st.Requests-before.Requests || st.Plain == before.Plain {
		t.Fatalf("before %+v, after %+v: want every request plain and no stream", before, st)
	}
	wantCash(t, cl, "1.60")
	c.EnsureSame()
}
