package cluster_test

// The bare-Raft reference: the same hashicorp/raft, raft-wal and raft-boltdb
// versions HATS is built on, three nodes on loopback, fsync on, 100-byte
// entries, a trivial state machine and no API, once with each log store
// (store=wal is what new HATS data dirs use; store=boltdb is the older
// format). It shows on any machine what the library beneath HATS does by
// itself, so HATS's figures can be read as a ratio to it. Run with
//   go test -run '^$' -bench RawRaft -benchtime 3s ./cluster_test
// It uses no HATS code; only the Raft settings HATS uses are copied.

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hats-trading/hats/node"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
)

// rawEntrySize is the size of every entry the reference applies.
const rawEntrySize = 100

// rawFSM counts what it applies; nothing else.
type rawFSM struct{ applied atomic.Uint64 }

func (f *rawFSM) Apply(*raft.Log) any { f.applied.Add(1); return nil }

func (f *rawFSM) Snapshot() (raft.FSMSnapshot, error) { return rawSnap(f.applied.Load()), nil }

func (f *rawFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.applied.Store(binary.BigEndian.Uint64(b[:]))
	return nil
}

type rawSnap uint64

func (s rawSnap) Persist(sink raft.SnapshotSink) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(s))
	if _, err := sink.Write(b[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (rawSnap) Release() {}

type rawStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

type rawNode struct {
	raft  *raft.Raft
	repl  *node.Replication // nil unless the kind runs Raft as a node does
	store rawStore
	trans *raft.NetworkTransport
}

// newRawCluster starts three Raft nodes on 127.0.0.1 with log stores of
// the given kind (node.LogStoreWAL or node.LogStoreBoltDB; both fsync on
// every append) and the Raft settings HATS uses.
func newRawCluster(b *testing.B, kind string) []*rawNode {
	b.Helper()
	const n = 3
	nodes := make([]*rawNode, n)
	var servers []raft.Server
	for i := range nodes {
		dir := b.TempDir()
		var store rawStore
		var err error
		if kind != node.LogStoreBoltDB {
			store, err = wal.Open(dir, wal.WithLogger(hclog.NewNullLogger()))
		} else {
			store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		}
		if err != nil {
			b.Fatal(err)
		}
		trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 4, 2*time.Second, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = &rawNode{store: store, trans: trans}
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("r%d", i+1)), Address: trans.LocalAddr()})
	}
	for i, rn := range nodes {
		snaps, err := raft.NewFileSnapshotStoreWithLogger(b.TempDir(), 1, hclog.NewNullLogger())
		if err != nil {
			b.Fatal(err)
		}
		rc := raft.DefaultConfig()
		rc.LocalID = servers[i].ID
		// As node.New configures Raft with the production defaults.
		rc.HeartbeatTimeout = node.DefaultHeartbeatTimeout
		rc.ElectionTimeout = node.DefaultElectionTimeout
		rc.LeaderLeaseTimeout = node.DefaultLeaderLeaseTimeout
		rc.CommitTimeout = node.DefaultCommitTimeout
		rc.SnapshotThreshold = node.DefaultSnapshotThreshold
		rc.SnapshotInterval = node.DefaultSnapshotInterval
		rc.TrailingLogs = node.DefaultTrailingLogs
		rc.MaxAppendEntries = 256
		rc.BatchApplyCh = true
		rc.Logger = hclog.NewNullLogger()
		var logs raft.LogStore = rn.store
		var trans raft.Transport = rn.trans
		if kind != node.LogStoreWAL && kind != node.LogStoreBoltDB { // as node.New reads its log
			if logs, err = raft.NewLogCache(node.RaftLogCache, rn.store); err != nil {
				b.Fatal(err)
			}
		}
		var rr *node.Replication
		if kind == rawNoPipeline || kind == rawEarly { // and replicates
			rr = node.NewReplication(logs, rn.trans, kind == rawEarly, slog.New(slog.NewTextHandler(io.Discard, nil)))
			logs, trans = rr.Logs, rr.Transport
		}
		r, err := raft.NewRaft(rc, &rawFSM{}, logs, rn.store, snaps, trans)
		if err != nil {
			b.Fatal(err)
		}
		if rr != nil {
			rr.Started(r)
		}
		rn.raft, rn.repl = r, rr
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for _, rn := range nodes {
			_ = rn.raft.Shutdown().Error()
			_ = rn.trans.Close()
			_ = rn.store.Close()
		}
	})
	return nodes
}

// rawLeader waits for a leader and returns it.
func rawLeader(b *testing.B, nodes []*rawNode) *rawNode {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, rn := range nodes {
			if rn.raft.State() == raft.Leader {
				if err := rn.raft.Barrier(5 * time.Second).Error(); err == nil {
					return rn
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("no Raft leader after 20s")
	return nil
}

func rawQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*q)]
}

// BenchmarkRawRaft_Apply applies 100-byte entries on the leader from 1, 16,
// 64 and 256 concurrent goroutines; each Apply returns after the entry is
// committed (fsynced on a quorum) and applied on the leader. Reports
// entries/s and the latency of one Apply, for each log store, and for the
// WAL read through raft.NewLogCache as HATS reads it (store=wal-logcache),
// and then with HATS's own replication around Raft: no pipeline
// (store=wal-logcache-nopipeline), and no pipeline with early append
// (store=wal-logcache-nopipeline-early), which is how a node runs Raft.
// The state machine is still a counter: these show what HATS's Raft setup
// does, not what HATS does.
func BenchmarkRawRaft_Apply(b *testing.B) {
	for _, kind := range []string{node.LogStoreWAL, rawWALCached, rawNoPipeline, rawEarly, node.LogStoreBoltDB} {
		b.Run("store="+kind, func(b *testing.B) { rawApply(b, kind) })
	}
}

const (
	rawWALCached  = "wal-logcache"                  // the WAL behind Raft's log cache
	rawNoPipeline = "wal-logcache-nopipeline"       // and node.Replication without early append
	rawEarly      = "wal-logcache-nopipeline-early" // and with it
)

func rawApply(b *testing.B, kind string) {
	nodes := newRawCluster(b, kind)
	leader := rawLeader(b, nodes)
	entry := make([]byte, rawEntrySize)
	for i := range entry {
		entry[i] = byte('a' + i%26)
	}
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("clients=%d", conc), func(b *testing.B) {
			if leader.raft.State() != raft.Leader {
				leader = rawLeader(b, nodes)
			}
			var next atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			var failed atomic.Int64
			var early0 uint64
			if leader.repl != nil {
				early0 = leader.repl.EarlyStats().Sent
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine := make([]time.Duration, 0, b.N/conc+1)
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if err := leader.raft.Apply(entry, 10*time.Second).Error(); err != nil {
							failed.Add(1)
							continue
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d applies failed", n, b.N)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "entries/s")
			b.ReportMetric(float64(rawQuantile(lat, 0.50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(rawQuantile(lat, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
			if leader.repl != nil {
				early := leader.repl.EarlyStats().Sent
				b.ReportMetric(float64(early-early0)/float64(len(lat)), "early/entry")
			}
		})
	}
}
