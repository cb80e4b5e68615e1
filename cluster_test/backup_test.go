package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// Test_BackupRestore: a backup taken from a follower while trading goes on
// restores into a brand new cluster (different addresses, the whole old
// cluster gone) that holds the same traders, money, shares and orders,
// accepts the old passwords, takes new writes, has a cluster key of its
// own and ends with identical state on every node. Restoring into a data
// dir that is not new is refused, and so is a damaged backup.
func Test_BackupRestore(t *testing.T) {
	old := NewCluster(t, 3, nil)
	ctx := context.Background()
	cl := old.Client()
	Trader(t, cl, "saver")
	WaitInstruments(t, cl)
	if _, err := cl.Deposit(ctx, "5000.00", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DepositShares(ctx, "AAPL", 40, ""); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for i, side := range []string{"buy", "sell"} {
		o, err := cl.PlaceOrder(ctx, transport.OrderRequest{ClientID: fmt.Sprintf("keep-%d", i), Symbol: "AAPL", Side: side, Type: "limit", Quantity: 3, LimitPrice: []string{"100.00", "300.00"}[i]})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.OrderID)
	}
	oldKey := old.Leader().Node.ClusterKey()
	old.EnsureSame()
	want, err := cl.Portfolio(ctx, transport.Linearizable)
	if err != nil {
		t.Fatal(err)
	}

	// Back up a follower while another trader keeps writing.
	busy := old.Client()
	Trader(t, busy, "busy")
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := busy.Deposit(ctx, "1.00", ""); err != nil {
				done <- err
				return
			}
		}
	}()
	follower := old.Followers()[0]
	before := follower.Node.FSM().AppliedIndex()
	file := filepath.Join(t.TempDir(), "hats.backup")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.Backup(ctx, follower.HTTPAddr, f)
	f.Close()
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("writes during the backup: %v", err)
	}
	info, err := fsm.InspectBackup(file)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != follower.ID || info.AppliedIndex < before || info.AppliedIndex != got.Index || info.Accounts < 2 || info.Bytes != got.Bytes {
		t.Fatalf("backup %+v, inspected %+v", got, info)
	}
	old.Close()

	// Damaged backups and used data dirs are refused.
	damaged := filepath.Join(t.TempDir(), "damaged.backup")
	data, _ := os.ReadFile(file)
	if err := os.WriteFile(damaged, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fsm.RestoreBackup(damaged, filepath.Join(t.TempDir(), "state.db")); !errors.Is(err, fsm.ErrBackup) {
		t.Fatalf("restore of a truncated backup: %v, want ErrBackup", err)
	}
	used := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(used, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fsm.RestoreBackup(file, used); !errors.Is(err, fsm.ErrBackup) {
		t.Fatalf("restore over an existing state file: %v, want ErrBackup", err)
	}

	// A new cluster from the backup: node.Restore makes n1's data dir, n1
	// starts on it as the only voter; n2 and n3 join it and catch up
	// from its snapshot.
	fresh := NewClusterFrom(t, 3, file, nil)
	if key := fresh.Leader().Node.ClusterKey(); key == "" || key == oldKey {
		t.Fatalf("restored cluster key %q: want a new one (old %q)", key, oldKey)
	}
	ncl := fresh.Client()
	if _, err := ncl.Login(ctx, "saver", "password-saver"); err != nil {
		t.Fatalf("old password on the restored cluster: %v", err)
	}
	have, err := ncl.Portfolio(ctx, transport.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if have.Cash != want.Cash || have.AvailableCash != want.AvailableCash || len(have.Positions) != len(want.Positions) {
		t.Fatalf("restored portfolio %+v, want %+v", have, want)
	}
	for _, id := range ids {
		o, err := ncl.Order(ctx, id)
		if err != nil || o.Status != "open" {
			t.Fatalf("order %d after the restore: %+v, %v", id, o, err)
		}
	}
	o, err := ncl.PlaceOrder(ctx, transport.OrderRequest{ClientID: "keep-0", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 3, LimitPrice: "100.00"})
	if err != nil || o.OrderID != ids[0] {
		t.Fatalf("a retried client order ID after the restore: %+v, %v (want the original order %d)", o, err, ids[0])
	}
	if _, err := ncl.Deposit(ctx, "10.00", ""); err != nil {
		t.Fatalf("a new write on the restored cluster: %v", err)
	}
	Poll(t, 15*time.Second, "the restored cluster records its own members", func() error {
		st, err := ncl.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if len(st.Nodes) != 3 {
			return fmt.Errorf("%d nodes", len(st.Nodes))
		}
		return nil
	})
	n1 := fresh.Nodes[0]
	fresh.Stop(n1)
	fresh.Restart(n1)
	if _, err := ncl.Deposit(ctx, "10.00", ""); err != nil {
		t.Fatalf("a write after the restored n1 restarted: %v", err)
	}
	fresh.WaitReady()

	// A restore into a data dir that holds Raft state (here n2's, its
	// state file lost) is refused before it writes anything; n2 then
	// starts as itself and catches up from the cluster. So is one into
	// a live node's whole data dir (n3's: state file and Raft state),
	// and one under another node's ID.
	n2 := fresh.Nodes[1]
	fresh.Stop(n2)
	if err := os.Remove(filepath.Join(n2.Dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Restore(node.RestoreConfig{Backup: file, ID: n2.ID, DataDir: n2.Dir, RaftAddr: n2.RaftAddr}); !errors.Is(err, node.ErrConfig) {
		t.Fatalf("restore over n2's Raft state: %v, want ErrConfig", err)
	}
	if _, err := os.Stat(filepath.Join(n2.Dir, "state.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore left a state file behind: %v", err)
	}
	fresh.Restart(n2)
	n3 := fresh.Nodes[2]
	if _, err := node.Restore(node.RestoreConfig{Backup: file, ID: n3.ID, DataDir: n3.Dir, RaftAddr: n3.RaftAddr}); !errors.Is(err, node.ErrConfig) {
		t.Fatalf("restore over n3's data dir: %v, want ErrConfig", err)
	}
	if _, err := node.Restore(node.RestoreConfig{Backup: file, ID: "n9", DataDir: n3.Dir, RaftAddr: n3.RaftAddr}); !errors.Is(err, node.ErrDataDir) {
		t.Fatalf("restore into n3's data dir as n9: %v, want ErrDataDir", err)
	}
	fresh.WaitReady()

	// An interrupted restore (state.db written, no Raft state yet) is
	// refused at start, instead of bootstrapping a log that the state
	// would skip.
	half := &TNode{ID: "h1", Dir: filepath.Join(t.TempDir(), "h1"), RaftAddr: freeAddr(t), HTTPAddr: freeAddr(t)}
	if err := os.MkdirAll(half.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := fsm.RestoreBackup(file, filepath.Join(half.Dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	if err := fresh.startWith(half, fresh.Config(half, nil)); err == nil || !errors.Is(err, node.ErrConfig) {
		t.Fatalf("start on a half-restored data dir: %v, want ErrConfig", err)
	}
}
