package node

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fakeAppender records the early requests and answers them.
type fakeAppender struct {
	mu     sync.Mutex
	reqs   map[raft.ServerID][]*raft.AppendEntriesRequest
	refuse bool
}

func (f *fakeAppender) AppendEntries(id raft.ServerID, _ raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reqs == nil {
		f.reqs = map[raft.ServerID][]*raft.AppendEntriesRequest{}
	}
	f.reqs[id] = append(f.reqs[id], args)
	resp.Term, resp.Success = args.Term, !f.refuse
	return nil
}

// take returns the requests sent to each peer since the last take.
func (f *fakeAppender) take() map[raft.ServerID][]*raft.AppendEntriesRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reqs
	f.reqs = nil
	return r
}

// failingStore fails StoreLogs while fail is set.
type failingStore struct {
	*raft.InmemStore
	fail bool
}

var errDiskFull = errors.New("disk full")

func (s *failingStore) StoreLogs(logs []*raft.Log) error {
	if s.fail {
		return errDiskFull
	}
	return s.InmemStore.StoreLogs(logs)
}

func entries(term uint64, from, to uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte{byte(i)}})
	}
	return out
}

// replicated is the request Raft's replicator sends a follower: entries
// from..to of term after prev.
func replicated(term, prev, from, to uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ID: []byte("n1"), Addr: []byte("127.0.0.1:1")},
		Term:      term, Leader: []byte("127.0.0.1:1"),
		PrevLogEntry: prev, PrevLogTerm: term, Entries: entries(term, from, to),
	}
}

func ok(term uint64) *raft.AppendEntriesResponse {
	return &raft.AppendEntriesResponse{Term: term, Success: true}
}

// TestEarlyAppendSendsWhatTheReplicatorWouldNext checks the rules that
// keep early append safe: only the leader sends, only to a follower its
// replication showed to hold every entry before the new ones, in the same
// term, with the previous entry's index and term, and never from an
// answer to an early request itself.
func TestEarlyAppendSendsWhatTheReplicatorWouldNext(t *testing.T) {
	store := &failingStore{InmemStore: raft.NewInmemStore()}
	fa := &fakeAppender{}
	leading, commit := false, uint64(1<<63)
	e := newEarlyAppend(store, fa, func() (bool, uint64) { return leading, commit }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	store1 := func(l []*raft.Log) {
		t.Helper()
		if err := e.StoreLogs(l); err != nil {
			t.Fatal(err)
		}
		e.wg.Wait()
	}
	expectNone := func(what string) {
		t.Helper()
		if got := fa.take(); len(got) != 0 {
			t.Fatalf("%s: sent early %v", what, got)
		}
	}

	// A follower stores its leader's entries: it sends nothing, even to a
	// peer it once knew.
	store1(entries(1, 1, 3))
	e.observe("n2", "a2", replicated(1, 0, 1, 3), ok(1), nil)
	store1(entries(1, 4, 4))
	expectNone("as a follower")

	// Leading in term 2; n2 has shown it holds entry 4, n3 refused, n4
	// only got heartbeats.
	leading = true
	store1(entries(2, 5, 5)) // n2's match is from term 1: forgotten
	expectNone("match from an earlier term")
	e.observe("n2", "a2", replicated(2, 4, 5, 5), ok(2), nil)
	e.observe("n3", "a3", replicated(2, 4, 5, 5), &raft.AppendEntriesResponse{Term: 2}, nil)
	e.observe("n4", "a4", &raft.AppendEntriesRequest{Term: 2}, ok(2), nil)
	store1(entries(2, 6, 7))
	got := fa.take()
	if len(got) != 1 || len(got["n2"]) != 1 {
		t.Fatalf("want one early request, to n2; got %v", got)
	}
	req := got["n2"][0]
	if req.Term != 2 || req.PrevLogEntry != 5 || req.PrevLogTerm != 2 || len(req.Entries) != 2 ||
		req.Entries[0].Index != 6 || string(req.ID) != "n1" || string(req.Addr) != "127.0.0.1:1" || req.LeaderCommitIndex != commit {
		t.Fatalf("early request %+v", req)
	}
	if st := e.stats(); st.Sent != 1 || st.Accepted != 1 {
		t.Fatalf("%+v; want 1 sent, 1 accepted", st)
	}

	// Until the replicator shows n2 holds 7, nothing more goes early;
	// answers to early requests do not count.
	store1(entries(2, 8, 8))
	expectNone("match behind the log")
	e.observe("n2", "a2", replicated(2, 5, 6, 8), ok(2), nil)
	e.observe("n2", "a2", &raft.AppendEntriesRequest{Term: 2}, &raft.AppendEntriesResponse{Term: 3}, nil) // a heartbeat says nothing
	store1(entries(2, 9, 9))
	if got := fa.take(); len(got["n2"]) != 1 || got["n2"][0].PrevLogEntry != 8 {
		t.Fatalf("after the replicator caught up: %v", got)
	}

	// A failed request, or one answered from a later term, forgets the
	// match.
	e.observe("n2", "a2", replicated(2, 8, 9, 9), nil, errors.New("connection reset"))
	store1(entries(2, 10, 10))
	expectNone("after a failed request")
	e.observe("n2", "a2", replicated(2, 9, 10, 10), &raft.AppendEntriesResponse{Term: 3}, nil)
	store1(entries(2, 11, 11))
	expectNone("after an answer from a later term")

	// A late answer from an earlier term changes nothing.
	e.observe("n2", "a2", replicated(2, 10, 11, 11), ok(2), nil)
	e.observe("n2", "a2", replicated(1, 3, 4, 4), &raft.AppendEntriesResponse{Term: 1}, nil)
	store1(entries(2, 12, 12))
	if got := fa.take(); len(got["n2"]) != 1 {
		t.Fatalf("a late answer from term 1 changed the match: %v", got)
	}

	// Deleting the last entry forgets it: the previous entry is unknown.
	e.observe("n2", "a2", replicated(2, 11, 12, 12), ok(2), nil)
	if err := e.DeleteRange(12, 12); err != nil {
		t.Fatal(err)
	}
	store1(entries(2, 12, 12))
	expectNone("after the last entry was deleted")

	// A failed write forgets the last entry too.
	e.observe("n2", "a2", replicated(2, 11, 12, 12), ok(2), nil)
	store.fail = true
	if err := e.StoreLogs(entries(2, 13, 13)); !errors.Is(err, errDiskFull) {
		t.Fatalf("store error %v", err)
	}
	store.fail = false
	e.wg.Wait()
	fa.take() // the request sent before the write failed
	e.observe("n2", "a2", replicated(2, 11, 12, 12), ok(2), nil)
	store1(entries(2, 13, 13))
	expectNone("after a failed write")

	// Entries that do not follow the last stored one go to nobody.
	e.observe("n2", "a2", replicated(2, 12, 13, 13), ok(2), nil)
	store1(entries(2, 15, 15))
	expectNone("after a gap")

	// While entries before the new ones are uncommitted, nothing goes
	// early: the replicator sends them all in one request.
	e.observe("n2", "a2", replicated(2, 14, 15, 15), ok(2), nil)
	commit = 14
	store1(entries(2, 16, 16))
	expectNone("with entry 15 not yet committed")
	e.observe("n2", "a2", replicated(2, 15, 16, 16), ok(2), nil)
	commit = 16
	store1(entries(2, 17, 17))
	if got := fa.take(); len(got["n2"]) != 1 || got["n2"][0].PrevLogEntry != 16 || got["n2"][0].LeaderCommitIndex != 16 {
		t.Fatalf("with everything before committed: %v", got)
	}

	// Every entry reached the store underneath.
	if last, _ := store.LastIndex(); last != 17 {
		t.Fatalf("store's last index %d", last)
	}
}

// idleLeader is a leader whose every entry is committed.
func idleLeader() (bool, uint64) { return true, 1 << 63 }

type monotonicStore struct{ *raft.InmemStore }

func (monotonicStore) IsMonotonic() bool { return true }

// TestEarlyAppendKeepsTheStoreMonotonic: Raft must still see that the
// log underneath refuses gaps (the WAL), or after a snapshot install it
// leaves the old entries in place and the next append fails.
func TestEarlyAppendKeepsTheStoreMonotonic(t *testing.T) {
	for _, c := range []struct {
		store raft.LogStore
		want  bool
	}{{monotonicStore{raft.NewInmemStore()}, true}, {raft.NewInmemStore(), false}} {
		var ls raft.LogStore = newEarlyAppend(c.store, &fakeAppender{}, idleLeader, slog.New(slog.NewTextHandler(io.Discard, nil)))
		m, ok := ls.(raft.MonotonicLogStore)
		if got := ok && m.IsMonotonic(); got != c.want {
			t.Fatalf("%T: monotonic %v, want %v", c.store, got, c.want)
		}
	}
}

// unchanged reports whether route sends Raft's request r as it is.
func unchanged(e *earlyAppend, id raft.ServerID, r *raft.AppendEntriesRequest) bool {
	got, answer := e.route(id, "a2", r)
	return got == r && answer == nil
}

// TestEarlyAppendAnswersOrTrims: Raft's next request to a follower that
// took an early request is answered with that answer when it asks for
// exactly those entries, or leaves them out and asks for the last of
// them instead when it carries more; anything else goes as Raft made it.
func TestEarlyAppendAnswersOrTrims(t *testing.T) {
	fa := &fakeAppender{}
	e := newEarlyAppend(raft.NewInmemStore(), fa, idleLeader, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := e.StoreLogs(entries(2, 1, 5)); err != nil {
		t.Fatal(err)
	}
	e.observe("n2", "a2", replicated(2, 0, 1, 5), ok(2), nil)
	if err := e.StoreLogs(entries(2, 6, 7)); err != nil {
		t.Fatal(err)
	}
	e.wg.Wait()

	// Exactly the early entries (or their tail): the early answer is the answer.
	for _, req := range []*raft.AppendEntriesRequest{replicated(2, 5, 6, 7), replicated(2, 6, 7, 7), replicated(2, 3, 4, 7)} {
		got, answer := e.route("n2", "a2", req)
		if got != nil || answer == nil || !answer.Success || answer.Term != 2 {
			t.Fatalf("request for %d..%d: sent %+v, answer %+v; want answered from the early answer", req.Entries[0].Index, req.PrevLogEntry+uint64(len(req.Entries)), got, answer)
		}
	}
	if a := e.answered.Load(); a != 3 {
		t.Fatalf("%d answered, want 3", a)
	}

	// More entries than the early request carried: trimmed.
	req := replicated(2, 5, 6, 8)
	req.LeaderCommitIndex = 5
	got, answer := e.route("n2", "a2", req)
	if answer != nil || got == req || got.PrevLogEntry != 7 || got.PrevLogTerm != 2 || len(got.Entries) != 1 || got.Entries[0].Index != 8 ||
		got.LeaderCommitIndex != 5 || got.Term != 2 || string(got.ID) != "n1" {
		t.Fatalf("trimmed %+v, answer %+v", got, answer)
	}
	if req.PrevLogEntry != 5 || len(req.Entries) != 3 {
		t.Fatalf("Raft's own request changed: %+v", req)
	}

	// An early answer too old to stand for the follower's last contact
	// answers nothing: the request goes, without the early entries.
	e.mu.Lock()
	r := e.peers["n2"].early
	e.mu.Unlock()
	at := r.at
	r.at = at.Add(-2 * earlyAnswerMaxAge)
	if got, answer := e.route("n2", "a2", replicated(2, 5, 6, 7)); answer != nil || got.PrevLogEntry != 7 || len(got.Entries) != 0 {
		t.Fatalf("with an old early answer: sent %+v, answer %+v", got, answer)
	}
	r.at = at

	for what, r := range map[string]*raft.AppendEntriesRequest{
		"entries before the early ones": replicated(2, 3, 4, 5),
		"entries after the early ones":  replicated(2, 7, 8, 9),
		"another term":                  replicated(3, 5, 6, 7),
		"no entries":                    {Term: 2, PrevLogEntry: 7, PrevLogTerm: 2},
	} {
		if !unchanged(e, "n2", r) {
			t.Fatalf("%s: answered or trimmed", what)
		}
	}
	if r := replicated(2, 5, 6, 7); !unchanged(e, "n3", r) {
		t.Fatal("changed for a follower that got nothing early")
	}
	if got, answer := e.route("n2", "a9", replicated(2, 5, 6, 7)); answer != nil || len(got.Entries) != 2 {
		t.Fatalf("answered or trimmed for another address under the same ID: %+v, %+v", got, answer)
	}
	if a := e.answered.Load(); a != 3 {
		t.Fatalf("%d answered, want still 3", a)
	}

	// A refused request from the replicator forgets the early one: the
	// follower may have lost its log, and would refuse the trimmed one.
	e.observe("n2", "a2", got, &raft.AppendEntriesResponse{Term: 2}, nil)
	if r := replicated(2, 5, 6, 7); !unchanged(e, "n2", r) {
		t.Fatal("answered or trimmed after the follower refused")
	}

	// An early request the follower refused answers and trims nothing.
	e.observe("n2", "a2", replicated(2, 0, 1, 7), ok(2), nil)
	fa.refuse = true
	if err := e.StoreLogs(entries(2, 8, 8)); err != nil {
		t.Fatal(err)
	}
	e.wg.Wait()
	if st := e.stats(); st.Sent != 2 || st.Accepted != 1 {
		t.Fatalf("%+v; want 2 sent, 1 accepted", st)
	}
	if r := replicated(2, 7, 8, 8); !unchanged(e, "n2", r) {
		t.Fatal("answered after a refused early request")
	}
}

// blockingAppender holds every early request until release is closed.
type blockingAppender struct{ release chan struct{} }

func (b blockingAppender) AppendEntries(_ raft.ServerID, _ raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	<-b.release
	resp.Term, resp.Success = args.Term, true
	return nil
}

// TestEarlyAppendWhileTheEarlyRequestIsOut: a request for exactly the
// early entries waits for the early answer and takes it; one that
// carries more goes again at once when the early entries are small, and
// when they are large waits for the answer and then goes trimmed.
func TestEarlyAppendWhileTheEarlyRequestIsOut(t *testing.T) {
	for _, c := range []struct {
		name string
		size int
		last uint64 // of Raft's request
		wait bool
	}{{"small, more after", 100, 7, false}, {"large, more after", earlyResendBytes + 1, 7, true}, {"small, the same", 100, 6, true}} {
		t.Run(c.name, func(t *testing.T) {
			b := blockingAppender{release: make(chan struct{})}
			e := newEarlyAppend(raft.NewInmemStore(), b, idleLeader, slog.New(slog.NewTextHandler(io.Discard, nil)))
			defer e.wg.Wait()
			release := sync.OnceFunc(func() { close(b.release) })
			defer release() // before the wait above, also when the test fails
			if err := e.StoreLogs(entries(2, 1, 5)); err != nil {
				t.Fatal(err)
			}
			e.observe("n2", "a2", replicated(2, 0, 1, 5), ok(2), nil)
			big := entries(2, 6, 6)
			big[0].Data = make([]byte, c.size)
			if err := e.StoreLogs(big); err != nil {
				t.Fatal(err)
			}
			req := replicated(2, 5, 6, c.last)
			req.Entries[0] = big[0]
			type routed struct {
				req    *raft.AppendEntriesRequest
				answer *raft.AppendEntriesResponse
			}
			got := make(chan routed, 1)
			go func() {
				r, a := e.route("n2", "a2", req)
				got <- routed{r, a}
			}()
			if !c.wait {
				if r := <-got; r.req != req || r.answer != nil {
					t.Fatalf("small entries not sent again at once: %+v", r)
				}
				release()
				return
			}
			select {
			case r := <-got:
				t.Fatalf("did not wait for the early answer: %+v", r)
			case <-time.After(50 * time.Millisecond): // a negative check: it must still be waiting
			}
			release()
			r := <-got
			switch {
			case c.last == 6 && (r.answer == nil || !r.answer.Success):
				t.Fatalf("not answered from the early answer: %+v", r)
			case c.last == 7 && (r.answer != nil || r.req.PrevLogEntry != 6 || len(r.req.Entries) != 1 || r.req.Entries[0].Index != 7):
				t.Fatalf("large entries not trimmed after the answer: %+v", r)
			}
		})
	}
}

// TestEarlyAppendBoundsAndStops: Raft's request waits at most
// earlyWaitMax for a stuck early answer, and nothing is sent early once
// close has been called (the node is shutting down).
func TestEarlyAppendBoundsAndStops(t *testing.T) {
	b := blockingAppender{release: make(chan struct{})}
	e := newEarlyAppend(raft.NewInmemStore(), b, idleLeader, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := e.StoreLogs(entries(2, 1, 5)); err != nil {
		t.Fatal(err)
	}
	e.observe("n2", "a2", replicated(2, 0, 1, 5), ok(2), nil)
	big := entries(2, 6, 6)
	big[0].Data = make([]byte, earlyResendBytes+1)
	if err := e.StoreLogs(big); err != nil {
		t.Fatal(err)
	}
	req := replicated(2, 5, 6, 6)
	req.Entries[0] = big[0]
	start := time.Now()
	if got, answer := e.route("n2", "a2", req); got != req || answer != nil {
		t.Fatalf("answered or trimmed while the early answer never came: %+v, %+v", got, answer)
	}
	if waited := time.Since(start); waited < earlyWaitMax {
		t.Fatalf("gave up after %v, before %v", waited, earlyWaitMax)
	}
	close(b.release)
	e.close()
	e.observe("n2", "a2", replicated(2, 5, 6, 6), ok(2), nil)
	if err := e.StoreLogs(entries(2, 7, 7)); err != nil {
		t.Fatal(err)
	}
	if s := e.stats().Sent; s != 1 {
		t.Fatalf("%d early requests sent, want only the first (none after close)", s)
	}
}

// TestEarlyAppendLeaderChecks: an early answer never stands in for the
// follower's answer while a leader check (VerifyLeader) that began after
// the early request went could count it: one under way when the early
// request was sent, or one started since.
func TestEarlyAppendLeaderChecks(t *testing.T) {
	fa := &fakeAppender{}
	e := newEarlyAppend(raft.NewInmemStore(), fa, idleLeader, slog.New(slog.NewTextHandler(io.Discard, nil)))
	next := uint64(1)
	early := func() *raft.AppendEntriesRequest { // store one entry, sent early to n2; Raft's request for it
		t.Helper()
		if err := e.StoreLogs(entries(2, next, next)); err != nil {
			t.Fatal(err)
		}
		e.wg.Wait()
		next++
		return replicated(2, next-2, next-1, next-1)
	}
	early()
	e.observe("n2", "a2", replicated(2, 0, 1, 1), ok(2), nil)

	req := early()
	if got, answer := e.route("n2", "a2", req); answer == nil {
		t.Fatalf("no check: not answered (sent %+v)", got)
	}
	e.observe("n2", "a2", req, ok(2), nil)

	// A check under way when the early request went.
	e.verifying.Add(1)
	e.verifies.Add(1)
	req = early()
	e.verifying.Add(-1)
	if got, answer := e.route("n2", "a2", req); answer != nil || got.PrevLogEntry != req.Entries[0].Index || len(got.Entries) != 0 {
		t.Fatalf("check under way at the send: sent %+v, answer %+v; want the trimmed request", got, answer)
	}
	e.observe("n2", "a2", req, ok(2), nil)

	// A check started after the early request went.
	req = early()
	e.verifying.Add(1)
	e.verifies.Add(1)
	e.verifying.Add(-1)
	if _, answer := e.route("n2", "a2", req); answer != nil {
		t.Fatal("check started after the send: answered from the early answer")
	}
	e.observe("n2", "a2", req, ok(2), nil)

	// None since: answered again.
	req = early()
	if _, answer := e.route("n2", "a2", req); answer == nil {
		t.Fatal("no check since the send: not answered")
	}
	e.observe("n2", "a2", req, ok(2), nil)

	// Raft's request with another term at the early request's last index
	// (cannot happen within a term; the check stands anyway).
	req = early()
	req.Entries[0].Term = 1
	if !unchanged(e, "n2", req) {
		t.Fatal("answered or trimmed a request whose entry has another term")
	}
}
