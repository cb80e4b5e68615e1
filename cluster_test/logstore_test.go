package cluster_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// A cluster whose nodes keep their Raft logs in different formats (n1 in
// the older boltdb format, the others in the WAL) replicates, compacts and
// catches a lagging WAL follower up by snapshot: raft-wal needs its log to
// stay contiguous, so the install must replace the follower's old entries
// rather than leave a hole below the snapshot. Everything ends identical.
func Test_MultiNode_MixedLogStores_SnapshotCatchUp(t *testing.T) {
	c := NewCluster(t, 3, func(cfg *node.Config) {
		if cfg.ID == "n1" {
			cfg.RaftLogStore = node.LogStoreBoltDB
		}
		cfg.SnapshotThreshold = 40
		cfg.TrailingLogs = 10
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	for _, tn := range c.Nodes {
		want := node.LogStoreWAL
		if tn.ID == "n1" {
			want = node.LogStoreBoltDB
		}
		if got := tn.Node.Status().RaftLogStore; got != want {
			t.Fatalf("%s: raft_log_store %q, want %q", tn.ID, got, want)
		}
	}
	cl := c.Client()
	Trader(t, cl, "mixed")
	ctx := context.Background()
	deposit := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	deposit(30)
	var lagging *TNode
	for _, f := range c.Followers() {
		if f.ID != "n1" {
			lagging = f
		}
	}
	if lagging == nil { // n1 leads and both followers are WAL nodes
		lagging = c.Followers()[0]
	}
	c.Kill(lagging)
	st, err := node.OpenLogStore(lagging.Dir)
	if err != nil {
		t.Fatal(err)
	}
	lastLagging, err := st.LastIndex()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	deposit(150)
	leader := c.Leader()
	// A snapshot is not enough: the first one may come just after the
	// lagging node stopped, compaction keeps TrailingLogs entries (and
	// the WAL frees whole 4 KiB segments), and Raft reports a snapshot
	// before it compacts after it. Wait until the leader's log no longer
	// holds the entry after the lagging node's last.
	Poll(t, 10*time.Second, "leader compacted its log past the lagging node", func() error {
		if fi := leader.Node.Status().FirstIndex; fi <= lastLagging+1 {
			return fmt.Errorf("leader's log starts at %d, lagging node at %d", fi, lastLagging)
		}
		return nil
	})
	c.Restart(lagging)
	c.EnsureSame()
	if si, _ := strconv.Atoi(lagging.Node.Raft().Stats()["last_snapshot_index"]); si == 0 {
		t.Fatalf("%s caught up without installing a snapshot", lagging.ID)
	}
	// It must go on appending after the install, and survive a restart.
	deposit(20)
	c.Kill(lagging)
	c.Restart(lagging)
	c.EnsureSame()
	mustCash(t, cl, transport.Linearizable, "200.00")
}
