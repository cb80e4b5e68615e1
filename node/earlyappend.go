package node

import (
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Early append: the leader sends new entries to its followers while it
// writes them to its own log, instead of after (Raft thesis §10.2.1; etcd
// does the same). hashicorp/raft v1.7.3 writes and fsyncs the leader's log
// in dispatchLogs and only then wakes the replicators, so a lone order
// waits for two fsyncs in a row: the leader's, then a follower's. Here the
// log store Raft writes through (earlyAppend) hands the entries to every
// follower known to hold everything before them, as the AppendEntries its
// replicator would send next, and then writes them locally; the
// follower's fsync runs alongside the leader's. When the replicator's own
// AppendEntries for those entries comes, the transport it sends through
// (replicationTransport) answers it with the follower's answer to the
// early request, if that answer is a success and fresh: the follower said
// it holds exactly those entries, in this term, after the same previous
// entry, which is what its answer to the replicator's request would say.
// Otherwise it trims the request to what the follower does not have yet.
//
// Why this is safe: the early request is exactly one the leader could send
// once the entries are in its log, which Raft allows before they are
// durable there; durability matters only for counting the leader in a
// commit quorum, and that is unchanged: Raft counts the leader after
// StoreLogs returns, and a follower only through its replicator, which
// Raft runs only for members. An answer the replicator gets from an early
// answer is the follower's own, given in the same term for the entries
// the replicator asked about, at most earlyAnswerMaxAge before (so the
// last contact Raft records for the follower is late by no more than
// that), and a follower acknowledges entries only once they are durable.
// The match kept here moves only with the replicator's answers, so a
// follower the replicator stopped serving (removed from the cluster) gets
// at most one early request. A leader whose
// write fails steps down and cannot lead that term again, so no other
// entries with those indexes and that term can exist; a late early
// request is an ordinary late AppendEntries of its term. A follower that
// is behind (or whose state is unknown) gets nothing early and is served
// by the replicator as before.
type earlyAppend struct {
	raft.LogStore                       // what Raft would otherwise write to (the log cache)
	trans         appender              // the plain transport: answers are not observed
	leader        func() (bool, uint64) // Raft leads, and its commit index; see newEarlyAppend
	log           *slog.Logger
	wg            sync.WaitGroup // early requests in flight
	sent, ok      atomic.Uint64  // early requests sent, and accepted by followers
	answered      atomic.Uint64  // replicator requests answered with an early answer
	// Leader checks (raft.VerifyLeader, through Replication.VerifyLeader):
	// started, and under way. See route.
	verifies, verifying atomic.Int64

	mu        sync.Mutex
	lastIndex uint64 // the last entry stored through here; 0 when not known
	lastTerm  uint64
	peers     map[raft.ServerID]*earlyPeer
	closed    bool // close was called: send nothing more
}

// appender is the part of raft.Transport early append sends with.
type appender interface {
	AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error
}

// earlyPeer is what the leader's replication has shown about one follower.
type earlyPeer struct {
	addr   raft.ServerAddress
	term   uint64 // the term of the requests below
	header raft.RPCHeader
	leader []byte
	match  uint64 // the last index the follower acknowledged to the replicator in term; 0: not known
	early  *earlyReq
}

// earlyReq is the last early request sent to a follower.
type earlyReq struct {
	addr       raft.ServerAddress // where it went
	last, term uint64             // its last entry
	done       chan struct{}      // closed once answered (or failed)
	// quiet: no leader check was under way when it was sent, and verifies
	// is how many had been started then (see route).
	quiet    bool
	verifies int64
	// Set before done closes:
	ok   bool                       // the follower took it
	resp raft.AppendEntriesResponse // and answered this
	at   time.Time                  // at this time
}

// newEarlyAppend wraps store. leader reports whether the Raft writing
// through it is the leader, and its commit index. On a leader only its
// main goroutine's dispatchLogs calls StoreLogs (a follower's
// appendEntries steps down first). The state can still change meanwhile
// (Raft's heartbeat fast path steps a leader down from a connection's
// goroutine when it sees a newer term), but that does not matter: an
// early request carries the entries' own term and the previous entry's
// index and term, which makes it a valid request of that term whenever
// it arrives.
func newEarlyAppend(store raft.LogStore, trans appender, leader func() (bool, uint64), log *slog.Logger) *earlyAppend {
	return &earlyAppend{LogStore: store, trans: trans, leader: leader, log: log, peers: map[raft.ServerID]*earlyPeer{}}
}

// stats returns what early append has done.
func (e *earlyAppend) stats() EarlyStats {
	return EarlyStats{Sent: e.sent.Load(), Accepted: e.ok.Load(), Answered: e.answered.Load()}
}

// EarlyStats counts what early append did on a leader.
type EarlyStats struct {
	Sent     uint64 // early requests sent
	Accepted uint64 // early requests the followers took
	Answered uint64 // replicator requests answered from an early answer, with no request of their own
}

// StoreLog implements raft.LogStore.
func (e *earlyAppend) StoreLog(l *raft.Log) error { return e.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: on the leader it first sends the
// entries to the followers that can take them, then writes them.
func (e *earlyAppend) StoreLogs(logs []*raft.Log) error {
	if len(logs) > 0 {
		if leading, commit := e.leader(); leading {
			if e.sendEarly(logs, commit) {
				// Let the senders write their requests before this
				// goroutine blocks in the fsync: a new goroutine waits
				// on this one's P, and a P held in a system call is
				// taken back only by the runtime's monitor, after 20 µs
				// or more (probes: the requests left 112-137 µs after
				// the write began, 16-23 µs with this). Sends park in
				// the network poller, never here.
				runtime.Gosched()
			}
		}
	}
	err := e.LogStore.StoreLogs(logs)
	e.mu.Lock()
	if err != nil {
		e.lastIndex, e.lastTerm = 0, 0
	} else if n := len(logs); n > 0 {
		e.lastIndex, e.lastTerm = logs[n-1].Index, logs[n-1].Term
	}
	e.mu.Unlock()
	return err
}

// IsMonotonic implements raft.MonotonicLogStore by asking the store
// underneath: Raft checks it to empty a WAL log whole after a snapshot
// install, instead of leaving a gap the WAL would refuse.
func (e *earlyAppend) IsMonotonic() bool {
	m, ok := e.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// DeleteRange implements raft.LogStore; deleting the last entry forgets it.
func (e *earlyAppend) DeleteRange(lo, hi uint64) error {
	e.mu.Lock()
	if e.lastIndex >= lo && e.lastIndex <= hi {
		e.lastIndex, e.lastTerm = 0, 0
	}
	e.mu.Unlock()
	return e.LogStore.DeleteRange(lo, hi)
}

// sendEarly runs in Raft's leader loop, inside dispatchLogs. It sends
// nothing while earlier entries are still uncommitted: the replicators
// are busy with those, and will send these with them in one request that
// a follower writes with one fsync; an early request would split that in
// two writes and add a round trip. So early append serves a lone write on an idle pipeline, which is what waits
// for the two fsyncs in a row.
func (e *earlyAppend) sendEarly(logs []*raft.Log, commit uint64) (sent bool) {
	first, term := logs[0].Index, logs[0].Term
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, p := range e.peers {
		if p.term < term {
			delete(e.peers, id) // learnt under an earlier leadership
		}
	}
	if e.lastIndex == 0 || first != e.lastIndex+1 {
		return false // the previous entry is not known here (a restart, a snapshot)
	}
	if commit < e.lastIndex {
		return false // earlier entries are still on their way
	}
	for id, p := range e.peers {
		if p.term != term || p.match != e.lastIndex {
			continue
		}
		req := &raft.AppendEntriesRequest{
			RPCHeader: p.header, Term: term, Leader: p.leader,
			PrevLogEntry: e.lastIndex, PrevLogTerm: e.lastTerm,
			// Everything before these entries is committed (above), so
			// this tells the follower to apply it: with the replicator's
			// request answered here, nothing else would until its next
			// round (CommitTimeout).
			LeaderCommitIndex: commit,
			Entries:           logs,
		}
		if e.closed {
			return sent
		}
		r := &earlyReq{addr: p.addr, last: logs[len(logs)-1].Index, term: term, done: make(chan struct{})}
		r.verifies = e.verifies.Load() // before verifying: see VerifyLeader
		r.quiet = e.verifying.Load() == 0
		p.early = r
		e.wg.Add(1) // under mu, never after close has set closed
		e.sent.Add(1)
		go e.send(id, p.addr, req, r)
		sent = true
	}
	return sent
}

func (e *earlyAppend) send(id raft.ServerID, addr raft.ServerAddress, req *raft.AppendEntriesRequest, r *earlyReq) {
	defer e.wg.Done()
	defer close(r.done)
	var resp raft.AppendEntriesResponse
	err := e.trans.AppendEntries(id, addr, req, &resp)
	switch {
	case err != nil:
		e.log.Debug("early append failed", "peer", id, "err", err)
	case resp.Success:
		r.ok, r.resp, r.at = true, resp, time.Now()
		e.ok.Add(1)
	default:
		e.log.Debug("early append refused", "peer", id, "term", resp.Term)
	}
}

// route decides what becomes of Raft's own request req to a follower
// that an early request may have served: it returns either the request
// to send in its place, or (when the early request carried exactly req's
// last entry and the follower took it no more than earlyAnswerMaxAge ago,
// with no leader check in the way: see earlyAnswerMaxAge) the answer, and
// nothing need be sent. The request it returns leaves out
// the entries an accepted early request gave the follower and asks
// instead for the last of them, by index and term: by Raft's log
// matching property a follower holding that entry holds every one before
// it, so a success means what success of req would. While the early
// request is still out, req waits for its answer when that answer would
// answer req too, or when the entries are large; otherwise (small
// entries, and req carries more) req goes as it is at once: the follower
// finds it has the early ones and writes the rest.
func (e *earlyAppend) route(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest) (*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) {
	n := len(req.Entries)
	if n == 0 {
		return req, nil
	}
	e.mu.Lock()
	var r *earlyReq
	if p := e.peers[id]; p != nil {
		r = p.early
	}
	e.mu.Unlock()
	first, last := req.Entries[0].Index, req.Entries[n-1].Index
	if r == nil || r.term != req.Term || r.addr != target || r.last < first || r.last > last {
		return req, nil // (another address: a member replaced under its ID)
	}
	k := r.last - first
	answers := r.last == last // the early answer would answer req
	select {
	case <-r.done:
	default:
		if !answers && entryBytes(req.Entries[:k+1]) <= earlyResendBytes {
			return req, nil // sending them again costs less than waiting
		}
		t := time.NewTimer(earlyWaitMax)
		select {
		case <-r.done:
			t.Stop()
		case <-t.C:
			return req, nil // the early request is stuck: do not hold up the replicator
		}
	}
	if !r.ok || req.Entries[k].Index != r.last || req.Entries[k].Term != r.term {
		return req, nil
	}
	if answers && time.Since(r.at) <= earlyAnswerMaxAge && r.quiet && e.verifies.Load() == r.verifies {
		e.answered.Add(1)
		return nil, &raft.AppendEntriesResponse{RPCHeader: r.resp.RPCHeader, Term: r.resp.Term, LastLog: r.resp.LastLog, Success: true}
	}
	t := *req
	t.PrevLogEntry, t.PrevLogTerm = r.last, r.term
	t.Entries = req.Entries[k+1:]
	return &t, nil
}

// observe learns from the answer to one of Raft's own AppendEntries
// requests which entries the follower holds. Heartbeats say nothing about
// the log and are skipped.
func (e *earlyAppend) observe(id raft.ServerID, addr raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error) {
	if req.PrevLogEntry == 0 && len(req.Entries) == 0 {
		return
	}
	last := req.PrevLogEntry
	if n := len(req.Entries); n > 0 {
		last = req.Entries[n-1].Index
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.peers[id]
	if p == nil {
		p = &earlyPeer{}
		e.peers[id] = p
	}
	if req.Term < p.term {
		return // a late answer from an earlier leadership
	}
	if req.Term > p.term {
		p.term, p.match = req.Term, 0
	}
	p.addr, p.header, p.leader = addr, req.RPCHeader, req.Leader
	switch {
	case err != nil || !resp.Success || resp.Term != req.Term:
		// Forget what the early request showed too: the follower may
		// have lost its log (a new node under the same ID), and a
		// trimmed request would be refused again and again.
		p.match, p.early = 0, nil
	case last > p.match:
		p.match = last
	}
}

// earlyResendBytes: Raft's request for entries an early request is still
// carrying, and for more after them, goes as it is, without waiting for
// the early answer, when the early entries hold at most this many bytes.
// The follower then finds it has them and writes only the rest; the
// leader saves the round trip a trimmed request would wait for.
const earlyResendBytes = 16 << 10

// earlyAnswerMaxAge: an early answer older than this does not answer
// Raft's request (which then goes, trimmed): Raft takes an answer as the
// follower's last contact, which its leader lease relies on, so an early
// answer may stand in for one only if it is about as recent. It is
// normally younger than the leader's own fsync.
//
// Raft also takes a successful answer as the follower's vote in every
// leader check (VerifyLeader, which linearizable reads rely on) waiting
// on that follower, and a check must only count answers the follower gave
// after the check began. An early answer was given after the early
// request was sent, so it answers Raft's request only when no check was
// under way when the early request went (one started before might not
// have reached Raft's loop yet) and none has started since (route
// checks the count just before answering; a check starting after that
// is one Raft would also let an answer already on its way count for).
const earlyAnswerMaxAge = 10 * time.Millisecond

// earlyWaitMax bounds how long Raft's request waits for an early answer
// (the transport's own deadline bounds the early request too, but a
// NetworkTransport made without a timeout has none).
const earlyWaitMax = time.Second

func entryBytes(logs []*raft.Log) (n int) {
	for _, l := range logs {
		n += len(l.Data) + len(l.Extensions)
	}
	return n
}

// close stops early append: it sends nothing more, and returns once no
// early request is in flight.
func (e *earlyAppend) close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.wg.Wait()
}

// Replication is the log store and transport a node's Raft runs on:
// replication without hashicorp/raft's pipeline (noPipelineTransport) and,
// when early append is on, the leader sending new entries while it writes
// them. Exported so that the bare-Raft benchmark can run Raft exactly as a
// node does.
type Replication struct {
	Logs      raft.LogStore  // pass to raft.NewRaft as its LogStore
	Transport raft.Transport // and as its Transport
	early     *earlyAppend
	started   atomic.Pointer[raft.Raft]
}

// NewReplication wraps logs (what Raft would read and write) and trans.
// Call Started with the Raft once raft.NewRaft returns.
func NewReplication(logs raft.LogStore, trans *raft.NetworkTransport, early bool, log *slog.Logger) *Replication {
	r := &Replication{Logs: logs}
	t := replicationTransport{noPipelineTransport: noPipelineTransport{trans}}
	if early {
		r.early = newEarlyAppend(logs, trans, r.leader, log)
		r.Logs, t.early = r.early, r.early
	}
	r.Transport = t
	return r
}

// Started tells early append which Raft it serves (NewRaft starts Raft
// before it returns, so this cannot be known when wrapping).
func (r *Replication) Started(rf *raft.Raft) { r.started.Store(rf) }

// EarlyStats returns what early append has done (all 0 with it off).
func (r *Replication) EarlyStats() EarlyStats {
	if r.early == nil {
		return EarlyStats{}
	}
	return r.early.stats()
}

// Close stops early append (nothing more is sent) and waits for the
// early requests in flight. Call it after Raft has shut down.
func (r *Replication) Close() {
	if r.early != nil {
		r.early.close()
	}
}

// VerifyLeader is raft.VerifyLeader on the Raft set by Started. Leader
// checks must go through here while early append is on, so that an early
// answer never counts as a follower's vote in a check that began after
// the follower gave it (see earlyAnswerMaxAge).
func (r *Replication) VerifyLeader() error {
	rf := r.started.Load()
	if rf == nil {
		return raft.ErrRaftShutdown
	}
	if r.early == nil {
		return rf.VerifyLeader().Error()
	}
	// Under way before started, and read the other way round by
	// sendEarly: a check counted as started there is seen as under way
	// unless it has ended.
	r.early.verifying.Add(1)
	r.early.verifies.Add(1)
	defer r.early.verifying.Add(-1)
	return rf.VerifyLeader().Error()
}

func (r *Replication) leader() (bool, uint64) {
	rf := r.started.Load()
	if rf == nil || rf.State() != raft.Leader {
		return false, 0
	}
	return true, rf.CommitIndex()
}

// replicationTransport is the transport Raft replicates through: without
// its pipeline (see noPipelineTransport) and, when early append is on,
// showing the leader's log store each answer to Raft's AppendEntries.
type replicationTransport struct {
	noPipelineTransport
	early *earlyAppend
}

// AppendEntries implements raft.Transport.
func (t replicationTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if t.early == nil {
		return t.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	var err error
	if send, answer := t.early.route(id, target, args); answer != nil {
		*resp = *answer
	} else {
		err = t.NetworkTransport.AppendEntries(id, target, send, resp)
	}
	t.early.observe(id, target, args, resp, err)
	return err
}
