package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// Benchmarks print figures; they assert nothing about speed. Run with
//   go test -run '^$' -bench . -benchtime 5s ./cluster_test
// Clusters use the production timing defaults (not the fast test timers)
// and fsync on every commit.

func benchCluster(b *testing.B) *Cluster {
	return NewCluster(b, 3, func(cfg *node.Config) {
		cfg.HeartbeatTimeout = node.DefaultHeartbeatTimeout
		cfg.ElectionTimeout = node.DefaultElectionTimeout
		cfg.LeaderLeaseTimeout = node.DefaultLeaderLeaseTimeout
	})
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkDeposit_1Client: one sequential client sending deposits over
// HTTP to the leader; each is acknowledged after commit and apply.
func BenchmarkDeposit_1Client(b *testing.B) {
	c := benchCluster(b)
	cl := c.Client(c.Leader())
	Trader(b, cl, "bench1")
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// BenchmarkDeposit_64Clients: 64 concurrent clients, each its own trader,
// spread over all three nodes (followers forward to the leader).
func BenchmarkDeposit_64Clients(b *testing.B) {
	const clients = 64
	c := benchCluster(b)
	cls := make([]*transport.Client, clients)
	for i := range cls {
		cls[i] = c.Client(c.Nodes[i%len(c.Nodes)])
		Trader(b, cls[i], fmt.Sprintf("bench64-%d", i))
	}
	ctx := context.Background()
	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(cl *transport.Client) {
			defer wg.Done()
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(cls[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "deposits/s")
	reportLatencies(b, lat)
}

// BenchmarkFailover_KillLeader: time from killing the leader (no hand-over)
// to the first acknowledged deposit, over several rounds on one cluster.
func BenchmarkFailover_KillLeader(b *testing.B) {
	const rounds = 5
	var gaps []time.Duration
	for r := 0; r < b.N; r++ {
		c := benchCluster(b)
		cl := c.Client()
		Trader(b, cl, "failover")
		ctx := context.Background()
		for i := 0; i < rounds; i++ {
			old := c.Leader()
			t0 := time.Now()
			c.Kill(old)
			if _, err := cl.Deposit(ctx, "1.00", ""); err != nil {
				b.Fatal(err)
			}
			gaps = append(gaps, time.Since(t0))
			c.Restart(old)
			c.WaitReady()
		}
		c.Close()
	}
	reportLatencies(b, gaps)
}

// BenchmarkRestart_100kEntries: a follower restarts on a data dir holding
// 100,000 applied entries; reports the time until it is serving and caught
// up. Raft snapshots are pushed out so the whole log tail is replayed and
// skipped, the worst case for NoSnapshotRestoreOnStart.
func BenchmarkRestart_100kEntries(b *testing.B) {
	const entries = 100_000
	c := NewCluster(b, 3, func(cfg *node.Config) {
		cfg.SnapshotThreshold = 1 << 30
		cfg.SnapshotInterval = time.Hour
	})
	cl := c.Client(c.Leader())
	acct := Trader(b, cl, "restart")
	leader := c.Leader()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= entries {
				cmd := &fsm.Command{Type: fsm.TypeDeposit, Account: acct.AccountID, Amount: 1}
				if _, err := leader.Node.Apply(context.Background(), cmd); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.EnsureSame()
	f := c.Followers()[0]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Kill(f)
		t0 := time.Now()
		c.Restart(f)
		want := leader.Node.FSM().AppliedIndex()
		Poll(b, time.Minute, "restarted node caught up", func() error {
			if f.Node.FSM().AppliedIndex() < want || f.Node.Ready() != nil {
				return fmt.Errorf("at %d of %d", f.Node.FSM().AppliedIndex(), want)
			}
			return nil
		})
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "restart-ms")
		if n := f.Node.FSM().CommandsApplied(); n != 0 {
			b.Fatalf("restart re-applied %d commands", n)
		}
	}
}

// BenchmarkOneClient_Layers splits one sequential client's round trip on
// the leader: a deposit over HTTP (JSON, session check, the node's write
// path) against the same command handed to node.Apply in process (the
// batcher, Raft and the state machine only). The difference is what the
// API costs; docs/performance.md compares both with bare Raft.
func BenchmarkOneClient_Layers(b *testing.B) {
	c := benchCluster(b)
	ld := c.Leader()
	cl := c.Client(ld)
	acct := Trader(b, cl, "layers")
	ctx := context.Background()
	layer := func(name string, op func() error) {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := op(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			reportLatencies(b, lat)
		})
	}
	layer("http", func() error {
		_, err := cl.Deposit(ctx, "1.00", "")
		return err
	})
	layer("apply", func() error {
		res, err := ld.Node.Apply(ctx, &fsm.Command{Type: fsm.TypeDeposit, Account: acct.AccountID, Amount: 100})
		if err == nil {
			err = res.Err()
		}
		return err
	})
}
