// Package node runs one HATS cluster member: Raft over the bbolt state
// machine, the single write path (forwarded to the leader when needed),
// consistent reads, membership and the node's share of the LDS role
// (registration and authentication). See DESIGN.md.
package node

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/crypto/bcrypt"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/transport"
)

// Sentinel errors of the node package. Those that cross the wire are the
// transport package's own values, so errors.Is works on both sides.
var (
	ErrNoLeader       = transport.ErrNoLeader
	ErrOutcomeUnknown = transport.ErrOutcomeUnknown
	ErrNodeIDInUse    = transport.ErrConflict
	ErrIncompatible   = transport.ErrIncompatible
	ErrConfig         = errors.New("bad node configuration")
	ErrJoinFailed     = errors.New("join failed")
	ErrDataDir        = errors.New("data dir belongs to another node")
	// ErrClosed: the node is shutting down and did not take the command
	// (it never reached Raft), so a client may safely send it to another
	// node: over the API it is 503 unavailable, not 500.
	ErrClosed = fmt.Errorf("%w: node closed", transport.ErrUnavailable)
)

// Defaults for Raft timing. A follower notices a dead leader after one to
// two heartbeat timeouts and pre-vote plus election take a round trip or
// two, so failover on a LAN lands around 0.35–0.7 s (docs/performance.md:
// median 0.36 s under full load on loopback; no election in 60 s of it). Heartbeats go out at a
// tenth of the timeout, so ten must be lost or late before a follower moves.
const (
	DefaultHeartbeatTimeout   = 150 * time.Millisecond
	DefaultElectionTimeout    = 150 * time.Millisecond
	DefaultLeaderLeaseTimeout = 150 * time.Millisecond
	DefaultCommitTimeout      = 5 * time.Millisecond
	DefaultApplyTimeout       = 5 * time.Second
	DefaultSessionTTL         = 24 * time.Hour
	DefaultSnapshotThreshold  = 65536
	DefaultSnapshotInterval   = 30 * time.Second
	DefaultTrailingLogs       = 10240
	RaftLogCache              = 16 // recent Raft entries kept in memory for replication
)

// Config configures a node. Zero durations take the defaults above.
type Config struct {
	ID       string
	DataDir  string
	RaftAddr string // address peers dial; also bound when RaftListener is nil
	HTTPAddr string // address clients and peers use for this node's API
	// GossipAddr is where the memberlist ring (the LDS view) listens and
	// is reached; empty disables gossip (the view falls back to Raft's
	// membership).
	GossipAddr string
	Join       []string

	RaftListener net.Listener       // optional pre-bound Raft listener
	Dial         transport.DialFunc // optional dialer for Raft and peer calls

	// TLS, when set, secures Raft with mutual TLS (both ends present a
	// certificate from the cluster's CA, and a dialed peer's must name
	// the host dialed) and makes calls to the other nodes' APIs over
	// https with this node's certificate. The API listener is the
	// caller's to wrap (TLS.Listener). nil: plaintext.
	TLS *transport.NodeTLS
	// GossipKey, when set, encrypts and authenticates the memberlist
	// ring (AES-GCM; 16, 24 or 32 bytes, the same on every node).
	GossipKey []byte

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	ApplyTimeout       time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64

	// Instruments is committed by the first leader of a cluster whose
	// instrument table is empty; nil means market.DefaultUniverse.
	Instruments []market.Instrument

	// RaftLogStore is the Raft log format for a new data dir: LogStoreWAL
	// (the default when empty) or LogStoreBoltDB. An existing data dir is
	// opened in the format it holds; naming the other one is an error.
	RaftLogStore string

	// RaftWALSegmentSize sizes new Raft WAL segment files in bytes (0: the
	// library's 64 MiB). The WAL frees log entries a whole segment at a
	// time, so compaction only drops entries once their segment is sealed;
	// tests use small segments to make snapshot catch-up happen.
	RaftWALSegmentSize int

	// NoEarlyAppend turns off early append: the leader then sends new
	// entries to its followers only after writing them to its own log, as
	// hashicorp/raft does by itself (earlyappend.go).
	NoEarlyAppend bool

	// StateCommitInterval is how long applied commands stay in the state
	// machine's memory layer before the background checkpoint commits
	// them to state.db (fsm.Options.CommitInterval); the Raft log holds
	// them meanwhile. 0 means fsm.DefaultCommitInterval; negative waits
	// for a checkpoint after every batch.
	StateCommitInterval time.Duration
	// MaxRules caps the state-machine rules versions this node applies
	// (0: all this release supports, fsm.SupportedRules). Tests set it
	// to stand in for an older release in a mixed-version cluster.
	MaxRules uint64

	// MaxBatch bounds the commands the leader packs into one Raft entry
	// (group commit); 0 means 512, 1 turns batching off.
	MaxBatch int

	// Feed configures the Market Engine that runs while this node leads.
	Feed FeedConfig

	SessionTTL   time.Duration
	BcryptCost   int // 0 means bcrypt.DefaultCost
	JoinAttempts int // 0 means 10
	JoinBackoff  time.Duration

	Logger       *slog.Logger // component loggers are derived from it
	RaftLogLevel string       // hclog level for the raft library; default "warn"
	RaftLogOut   io.Writer    // default os.Stderr
}

// checkIdentity checks a node's --id and --data-dir.
func checkIdentity(id, dataDir string) error {
	if id == "" || strings.ContainsAny(id, " \t\n/") {
		return fmt.Errorf("%w: --id must be a non-empty name without spaces or slashes", ErrConfig)
	}
	if dataDir == "" {
		return fmt.Errorf("%w: --data-dir is required", ErrConfig)
	}
	return nil
}

func (c *Config) setDefaults() error {
	if err := checkIdentity(c.ID, c.DataDir); err != nil {
		return err
	}
	if c.RaftAddr == "" || c.HTTPAddr == "" {
		return fmt.Errorf("%w: --raft-addr and --http-addr are required", ErrConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.ElectionTimeout, DefaultElectionTimeout)
	def(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.ApplyTimeout, DefaultApplyTimeout)
	def(&c.SnapshotInterval, DefaultSnapshotInterval)
	def(&c.SessionTTL, DefaultSessionTTL)
	def(&c.JoinBackoff, 200*time.Millisecond)
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.BcryptCost == 0 {
		c.BcryptCost = bcrypt.DefaultCost
	}
	if c.JoinAttempts == 0 {
		c.JoinAttempts = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RaftLogLevel == "" {
		c.RaftLogLevel = "warn"
	}
	if c.RaftLogOut == nil {
		c.RaftLogOut = os.Stderr
	}
	return nil
}

// Node is one running cluster member.
type Node struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *fsm.FSM
	store  logStore
	trans  *raft.NetworkTransport
	repl   *Replication // the log store and transport Raft runs on
	peer   *transport.Peer
	eng    *engine
	batch  *batcher
	fwd    *forwarder
	stream *transport.StreamLayer
	gossip *gossip
	snaps  *steppedSnapshots

	readyTerm atomic.Uint64 // term in which this leader's barrier completed
	// clusterKey caches the cluster key once it is applied: it is set by
	// the cluster's first entry and never changes, and every forwarded
	// request reads it.
	clusterKey atomic.Pointer[string]
	leaderAddr atomic.Pointer[memberAddr] // leaderHTTP's cache
	leaders    *leaderWatch
	// leaderObs receives Raft's leader observations (leaderwatch.go).
	leaderObs      chan raft.Observation
	leaderObserver *raft.Observer
	notify         chan bool
	done           chan struct{}
	wg             sync.WaitGroup
	closeOnce      sync.Once
	closeErr       error

	hasState bool
	logStore string // LogStoreWAL or LogStoreBoltDB

	rulesMu      sync.Mutex             // a leader's joins and rules raises, one at a time (rules.go)
	rulesPending atomic.Pointer[string] // why the leader has not raised the rules (status)
}

var _ transport.Backend = (*Node)(nil)

// Order streams take the callback path only if Node keeps ApplyAsync's
// signature; without it they would quietly fall back to a goroutine per
// order.
var _ transport.AsyncApplier = (*Node)(nil)

// New opens the data dir and starts Raft. A node with an empty data dir and
// no join addresses bootstraps a one-node cluster; one with existing state
// resumes its membership and never bootstraps again. Call JoinCluster after
// the HTTP API is serving.
func New(cfg Config) (*Node, error) {
	n, err := newNode(cfg)
	if err != nil {
		return nil, err
	}
	return n, nil
}

func newNode(cfg Config) (n *Node, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := claimDataDir(cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	if err := checkRestoreMarker(cfg.DataDir); err != nil {
		return nil, err
	}
	n = &Node{cfg: cfg, log: cfg.Logger.With("component", "node", "node", cfg.ID), notify: make(chan bool, 1), done: make(chan struct{}), leaders: newLeaderWatch()}
	n.peer = transport.NewPeer(cfg.ApplyTimeout, cfg.Dial, cfg.TLS)
	if n.eng, err = newEngine(n, cfg.Feed); err != nil {
		return nil, err
	}
	self := n // n itself is nil by the time a failing return runs this
	defer func() {
		if err != nil {
			self.closeStores()
		}
	}()

	rlog := hclog.New(&hclog.LoggerOptions{Name: "raft." + cfg.ID, Level: hclog.LevelFromString(cfg.RaftLogLevel), Output: cfg.RaftLogOut})
	snaps, err := newSteppedSnapshots(cfg.DataDir, 2, rlog, cfg.Logger.With("component", "snapshots", "node", cfg.ID))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = snaps
	fo := fsm.DefaultOptions()
	fo.MaxRules = cfg.MaxRules
	if cfg.StateCommitInterval != 0 {
		fo.CommitInterval = max(cfg.StateCommitInterval, 0)
	}
	n.fsm, err = fsm.OpenWith(filepath.Join(cfg.DataDir, "state.db"), cfg.Logger.With("component", "fsm", "node", cfg.ID), fo)
	if err != nil {
		return nil, err
	}
	// The log store opens after the state file, whose lock (with a
	// timeout) tells a second process on the same data dir to go away.
	if n.store, n.logStore, err = openLogStore(cfg.DataDir, cfg.RaftLogStore, cfg.RaftWALSegmentSize, rlog); err != nil {
		return nil, err
	}
	if err := n.catchUpFromSnapshot(snaps.FileSnapshotStore); err != nil {
		return nil, err
	}

	ln := cfg.RaftListener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.RaftAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: listen on --raft-addr %s: %v", ErrConfig, cfg.RaftAddr, err)
		}
	}
	raftDial := cfg.Dial
	if cfg.TLS != nil {
		ln = cfg.TLS.Listener(ln, true)
		raftDial = cfg.TLS.Dial(cfg.Dial)
	}
	stream, err := transport.NewStreamLayer(ln, cfg.RaftAddr, raftDial)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%w: --raft-addr: %v", ErrConfig, err)
	}
	n.stream = stream
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 4, Timeout: 2 * time.Second, Logger: rlog,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = true // the bbolt state is durable; see catchUpFromSnapshot
	rc.NotifyCh = n.notify
	rc.Logger = rlog

	n.hasState, err = raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	if !n.hasState && n.fsm.AppliedIndex() > 0 {
		// Bootstrapping (or joining) would replay a new log from index 1
		// into state that skips every entry up to its own index.
		return nil, fmt.Errorf("%w: state.db holds state at index %d but there is no Raft state beside it (an interrupted hats restore, or a copied state file): empty the data dir and restore again, or join with an empty one", ErrConfig, n.fsm.AppliedIndex())
	}
	// Replication reads back the entries the leader has just written; the
	// cache answers those from memory instead of a read from the WAL per
	// entry (a follower further behind is served from the WAL). Writes go
	// through to the store first. It holds at most RaftLogCache entries:
	// tens of kilobytes each under load, 128 MiB if every one were a
	// maximal (maxBatchBytes) batch.
	logs, err := raft.NewLogCache(RaftLogCache, n.store)
	if err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	n.repl = NewReplication(logs, n.trans, !cfg.NoEarlyAppend, cfg.Logger.With("component", "raft", "node", cfg.ID))
	n.raft, err = raft.NewRaft(rc, n.fsm, n.repl.Logs, n.store, snaps, n.repl.Transport)
	n.repl.Started(n.raft)
	if err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if n.hasState {
		n.warnMovedRaftAddr()
	}
	n.observeLeaders() // before bootstrap, so the first leader is seen too
	if !n.hasState && len(cfg.Join) == 0 {
		n.log.Info("bootstrapping a new cluster")
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr()}}})
		if err := f.Error(); err != nil {
			n.raft.Shutdown()
			n.trans.Close()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	if err := n.startGossip(); err != nil {
		n.raft.Shutdown()
		n.trans.Close()
		return nil, err
	}
	n.batch = newBatcher(n, cfg.MaxBatch)
	n.fwd = newForwarder(n, cfg.MaxBatch)
	n.wg.Add(6)
	go n.every(rulesCheckInterval, n.watchRules)
	go n.watchLeaderChanges()
	go n.batch.run()
	go n.fwd.run()
	go n.watchLeadership()
	go n.every(2*time.Second, n.keepOwnRecord)
	return n, nil
}

// warnMovedRaftAddr says when the Raft configuration the node starts with
// names it at another address than the one it now advertises (a new
// --raft-addr, or hats restore given another): peers dial the recorded
// one.
func (n *Node) warnMovedRaftAddr() {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == n.cfg.ID && s.Address != n.trans.LocalAddr() {
			n.log.Warn("the Raft configuration names this node at another address, which its peers dial: start it with that --raft-addr (hats restore and hats node need the same one), or move it by a join with an empty data dir",
				"recorded", s.Address, "advertised", n.trans.LocalAddr())
		}
	}
}

// claimDataDir records the node ID in the data dir so the same data can
// never be started under another identity.
func claimDataDir(dir, id string) error {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		if got := strings.TrimSpace(string(b)); got != id {
			return fmt.Errorf("%w: %s holds node %q, not %q", ErrDataDir, dir, got, id)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return os.WriteFile(p, []byte(id+"\n"), 0o600)
}

// catchUpFromSnapshot covers the one case NoSnapshotRestoreOnStart cannot:
// state older than the newest snapshot (Raft will not replay entries the
// snapshot covers). Then the snapshot is restored before Raft starts.
func (n *Node) catchUpFromSnapshot(snaps *raft.FileSnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	meta := list[0]
	if meta.Index <= n.fsm.AppliedIndex() {
		return nil
	}
	n.log.Warn("state is behind the newest snapshot; restoring it", "state_index", n.fsm.AppliedIndex(), "snapshot_index", meta.Index)
	_, rc, err := snaps.Open(meta.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", meta.ID, err)
	}
	return n.fsm.Restore(rc)
}

// NodeID implements transport.Backend.
func (n *Node) NodeID() string { return n.cfg.ID }

// HasExistingState reports whether the node started on existing Raft state.
func (n *Node) HasExistingState() bool { return n.hasState }

// FSM exposes the state machine (tests and status).
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the Raft instance (tests).
func (n *Node) Raft() *raft.Raft { return n.raft }

// IsLeader reports whether this node currently believes it leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case leader := <-n.notify:
			if !leader {
				n.readyTerm.Store(0)
				n.peer.CloseIdle()
				n.eng.stop()
				continue
			}
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.onLeader()
			}()
		}
	}
}

// onLeader runs when this node wins an election: a barrier makes sure every
// entry of earlier terms is applied, then the cluster's own records are
// brought up to date. The last of those writes is always a state machine
// command (the leader's address record), so the commit index a read index
// hands out is one the state machine will reach; Raft's own no-op and
// barrier entries never reach the state machine's applied index. Only then
// does this leader serve read indexes.
func (n *Node) onLeader() {
	term := n.raft.CurrentTerm()
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		n.log.Warn("leader barrier failed", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if n.ClusterKey() == "" {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		if _, err := n.applyLocal(ctx, &fsm.Command{Type: fsm.TypeInitCluster, ClusterKey: hex.EncodeToString(key)}); err != nil {
			n.log.Warn("init cluster", "err", err)
		}
		// A new (or restored) cluster has no other member yet: it starts
		// at this release's rules instead of the base ones.
		if err := n.raiseRules(ctx); err != nil {
			n.log.Warn("rules version of a new cluster", "err", err)
		}
	}
	n.ensureInstruments(ctx)
	if _, err := n.applyLocal(ctx, &fsm.Command{Type: fsm.TypeSetNode, NodeID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr, GossipAddr: n.cfg.GossipAddr}); err != nil {
		n.log.Warn("record own address", "err", err)
		return
	}
	if n.raft.CurrentTerm() != term || !n.IsLeader() {
		return
	}
	n.readyTerm.Store(term)
	n.log.Info("leading", "term", term)
	n.eng.start()
}

// keepOwnRecord makes sure the replicated member table holds this node's
// current addresses. Joins and elections record them, but a write can be
// lost to a leadership change (the bootstrap node's first record, say), so
// every node checks every few seconds and, when its record is missing or
// stale, asks the leader to rewrite it (an idempotent join).
func (n *Node) keepOwnRecord() {
	var have fsm.NodeAddrs
	_ = n.fsm.View(func(v *fsm.View) error { have, _ = v.Node(n.cfg.ID); return nil })
	if have.HTTPAddr == n.cfg.HTTPAddr && have.RaftAddr == n.cfg.RaftAddr && have.GossipAddr == n.cfg.GossipAddr {
		return
	}
	if _, lid := n.raft.LeaderWithID(); lid == "" || !n.isMember() {
		return // a removed node must not put itself back
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	err := n.Join(ctx, transport.JoinRequest{ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr, GossipAddr: n.cfg.GossipAddr})
	cancel()
	if err != nil {
		n.log.Warn("refresh own member record", "err", err)
	}
}

// every runs fn every d until the node closes (one of n.wg's goroutines).
func (n *Node) every(d time.Duration, fn func()) {
	defer n.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		fn()
	}
}

// ensureInstruments commits the configured instrument table when the
// cluster has none yet (a brand new cluster).
func (n *Node) ensureInstruments(ctx context.Context) {
	count := 0
	_ = n.fsm.View(func(v *fsm.View) error { count = len(v.Instruments()); return nil })
	if count > 0 {
		return
	}
	list := n.cfg.Instruments
	if list == nil {
		list = market.DefaultUniverse()
	}
	for _, in := range list {
		res, err := n.applyLocal(ctx, &fsm.Command{Type: fsm.TypeSetInstrument, Symbol: in.Symbol, Name: in.Name, Price: in.RefPrice})
		if err == nil {
			err = res.Err()
		}
		if err != nil {
			n.log.Warn("commit instrument", "symbol", in.Symbol, "err", err)
			return
		}
	}
	n.log.Info("instrument table committed", "count", len(list))
}

// Revoked implements transport.RevocationChecker: whether c is on the
// revocation list of the node's TLS settings.
func (n *Node) Revoked(c *x509.Certificate) bool {
	return n.cfg.TLS != nil && n.cfg.TLS.Revoked(c)
}

var _ transport.RevocationChecker = (*Node)(nil)

// ClusterKey implements transport.Backend.
func (n *Node) ClusterKey() string {
	if k := n.clusterKey.Load(); k != nil {
		return *k
	}
	var k string
	_ = n.fsm.View(func(v *fsm.View) error { k = v.ClusterKey(); return nil })
	if k != "" {
		n.clusterKey.Store(&k)
	}
	return k
}

// Ready implements transport.Backend: the node knows a leader and has the
// cluster's records applied.
func (n *Node) Ready() error {
	if _, id := n.raft.LeaderWithID(); id == "" {
		return fmt.Errorf("%w: this node knows no leader", ErrNoLeader)
	}
	if n.ClusterKey() == "" {
		return fmt.Errorf("%w: cluster records not applied yet", transport.ErrUnavailable)
	}
	return nil
}

// Close hands leadership to another voter when this node leads, then stops
// Raft and closes the stores.
func (n *Node) Close() error { return n.shutdown(true) }

// Kill stops the node without handing leadership over, as close to a crash
// as an in-process node gets (tests).
func (n *Node) Kill() error { return n.shutdown(false) }

func (n *Node) shutdown(graceful bool) error {
	n.closeOnce.Do(func() {
		if graceful && n.IsLeader() && n.otherVoters() > 0 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer on shutdown failed", "err", err)
			} else {
				n.log.Info("handed leadership over before shutdown")
			}
		}
		close(n.done)
		n.eng.stop()
		n.gossip.close(graceful)
		n.closeErr = n.stopRaft()
		n.wg.Wait()
		n.trans.Close()
		n.repl.Close()
		n.closeStores()
	})
	return n.closeErr
}

// stopRaft shuts Raft down within a bounded time. Raft's replication
// goroutines can sit on a connection to a peer that stopped answering (a
// partition); if shutdown has not finished after a grace period, every
// Raft connection is closed, which unblocks them.
func (n *Node) stopRaft() error {
	done := make(chan error, 1)
	go func() { done <- n.raft.Shutdown().Error() }()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Second):
	}
	n.log.Warn("raft shutdown is slow; closing its connections")
	n.stream.CloseAll()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%w: raft shutdown did not finish", ErrClosed)
	}
}

func (n *Node) closeStores() {
	if n.store != nil {
		n.store.Close()
	}
	if n.fsm != nil {
		n.fsm.Close()
	}
}

// isMember reports whether this node is in the Raft configuration.
func (n *Node) isMember() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return true
		}
	}
	return false
}

func (n *Node) otherVoters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.cfg.ID {
			c++
		}
	}
	return c
}

// noPipelineTransport turns off hashicorp/raft's pipelined replication. In
// v1.7.3 a follower rejecting an append while the sender is mid-send can
// leave the pipeline's sender and decoder blocked on each other forever
// (replication to that follower stops and shutdown never finishes); the
// chaos suite hit it 17 times in 5 campaigns and never with this wrapper.
// Raft falls back to one AppendEntries round trip at a time per follower.
type noPipelineTransport struct{ *raft.NetworkTransport }

func (noPipelineTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
