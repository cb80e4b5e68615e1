package fsm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
	bolt "go.etcd.io/bbolt"
)

// committedIndex reads the applied index stored in the file, bypassing the
// memory layers.
func committedIndex(t *testing.T, f *FSM) uint64 {
	t.Helper()
	var idx uint64
	if err := f.viewCommitted(func(v *View) error { idx = getU64(v.tx.Bucket(bMeta), kAppliedIndex); return nil }); err != nil {
		t.Fatal(err)
	}
	return idx
}

// copyFile copies the state file as a crash would leave it: what bbolt
// committed, nothing of the memory layers.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A crash loses applied-but-uncommitted commands from the state file only:
// the file holds a consistent earlier state with its own applied index, and
// replaying the Raft log from there gives exactly the state of a node that
// never crashed (each entry applied once).
func TestDeferredCommitCrashReplaysFromLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	f, err := OpenWith(path, nil, Options{CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann")
	bob := h.register("bob")
	var all []*raft.Log
	for i := range 40 {
		l := h.logs(deposit(ann, 100), deposit(bob, 3))
		applyLogs(t, f, l)
		all = append(all, l...)
		if i == 19 {
			if err := f.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	committed := committedIndex(t, f)
	if committed >= f.AppliedIndex() {
		t.Fatalf("nothing pending: committed %d, applied %d", committed, f.AppliedIndex())
	}
	crashed := filepath.Join(dir, "crashed.db")
	copyFile(t, path, crashed)

	g, err := Open(crashed, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.AppliedIndex() != committed {
		t.Fatalf("reopened file says applied %d, committed was %d", g.AppliedIndex(), committed)
	}
	if c := cash(t, g, ann); c != 20*100 {
		t.Fatalf("crashed file: ann has %s, want the 20 committed deposits", c)
	}
	// Raft replays from its snapshot index (here the whole log); entries at
	// or below the file's index are skipped.
	before := g.CommandsApplied()
	applyLogs(t, g, append(h.logsBefore(all), all...))
	if got := g.CommandsApplied() - before; got != 40 {
		t.Fatalf("replay applied %d commands, want the 40 lost ones", got)
	}
	if hashOf(t, g) != hashOf(t, f) {
		t.Fatal("replayed state differs from the node that never crashed")
	}
}

// logsBefore is a stand-in for the registration entries at indexes 1..2 of
// TestDeferredCommitCrashReplaysFromLog: their index is at or below the
// file's, so ApplyBatch must skip them whatever they hold.
func (h *harness) logsBefore(all []*raft.Log) []*raft.Log {
	first := all[0].Index
	out := make([]*raft.Log, 0, first-1)
	for i := uint64(1); i < first; i++ {
		out = append(out, &raft.Log{Index: i, Term: h.term, Type: raft.LogCommand, Data: Encode(deposit(1, 1_000_000))})
	}
	return out
}

// Snapshot commits first, so the stored index is never behind a snapshot
// (Raft then may drop log entries up to it), and the snapshot holds every
// applied command.
func TestSnapshotCommitsPendingState(t *testing.T) {
	h := &harness{t: t, f: mustOpenOpts(t, Options{CommitInterval: time.Hour}), next: 1, term: 1, now: t0}
	ann := h.register("ann")
	h.apply(deposit(ann, 250))
	if committedIndex(t, h.f) == h.f.AppliedIndex() {
		t.Fatal("test needs applied state that is not committed yet")
	}
	data := snapshotBytes(t, h.f)
	if got := committedIndex(t, h.f); got != h.f.AppliedIndex() {
		t.Fatalf("after Snapshot the file holds index %d, applied is %d", got, h.f.AppliedIndex())
	}
	dst := mustOpen(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if cash(t, dst, ann) != 250 || dst.AppliedIndex() != h.f.AppliedIndex() {
		t.Fatalf("restored snapshot: cash %s at %d, want 2.50 at %d", cash(t, dst, ann), dst.AppliedIndex(), h.f.AppliedIndex())
	}
}

// A quiet state machine commits its last commands within about the commit
// interval, without waiting for more writes; Close commits the rest.
func TestFlushLoopCommitsWhenIdle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	f, err := OpenWith(path, nil, Options{CommitInterval: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann")
	deadline := time.Now().Add(5 * time.Second)
	for committedIndex(t, f) != f.AppliedIndex() {
		if time.Now().After(deadline) {
			t.Fatalf("not committed after 5 s: file %d, applied %d", committedIndex(t, f), f.AppliedIndex())
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.apply(deposit(ann, 9))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if got := getU64(tx.Bucket(bMeta), kAppliedIndex); got != h.next-1 {
			t.Errorf("closed file holds index %d, want %d", got, h.next-1)
		}
		return nil
	})
}

// CommitMaxCommands bounds how much one memory layer holds: the tenth
// command freezes it and the checkpoint writer commits it without waiting
// for the interval.
func TestCommitMaxCommands(t *testing.T) {
	h := &harness{t: t, f: mustOpenOpts(t, Options{CommitInterval: time.Hour, CommitMaxCommands: 10}), next: 1, term: 1, now: t0}
	ann := h.register("ann")
	for range 9 {
		h.apply(deposit(ann, 1))
	}
	want := h.f.AppliedIndex()
	deadline := time.Now().Add(5 * time.Second)
	for got := committedIndex(t, h.f); got != want; got = committedIndex(t, h.f) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 commands the file holds %d, applied %d", got, want)
		}
		time.Sleep(time.Millisecond)
	}
	h.apply(deposit(ann, 1))
	if committedIndex(t, h.f) == h.f.AppliedIndex() {
		t.Fatal("11th command committed at once")
	}
}

// RecentHash reuses a young walk, and says which index it is of.
func TestRecentHash(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	h1, i1, err := h.f.Hash()
	if err != nil {
		t.Fatal(err)
	}
	h.apply(deposit(ann, 5))
	h2, i2, _ := h.f.RecentHash(time.Hour)
	if h2 != h1 || i2 != i1 {
		t.Fatalf("young walk not reused: %s@%d, want %s@%d", h2, i2, h1, i1)
	}
	h3, i3, _ := h.f.RecentHash(0)
	if h3 == h1 || i3 != h.f.AppliedIndex() {
		t.Fatalf("RecentHash(0) gave %s@%d, want a new walk at %d", h3, i3, h.f.AppliedIndex())
	}
}

// Buckets whose keys grow at the end of a range are packed: after
// thousands of orders from a few traders, the leaf pages of the order
// table, open set, statement and order-event buckets are mostly full (65% or more). bbolt's default
// split leaves them about half full, which doubles the file, each
// commit's writes and each snapshot.
func TestAppendBucketsArePacked(t *testing.T) {
	h := newHarness(t)
	accts := exSetup(h)
	sym := exSymbols[0].sym
	ref := exSymbols[0].ref
	var fund []*Command
	for _, a := range accts {
		fund = append(fund, deposit(a, trader.MaxAmount), sharesCmd(TypeDepositShares, a, sym, 1_000_000))
	}
	for _, r := range h.apply(fund...) {
		wantCode(t, r, CodeOK)
	}
	for round := 0; round < 20; round++ {
		var cmds []*Command
		for i := 0; i < 200; i++ {
			a := accts[i%len(accts)]
			side, price := market.Buy, ref-1-int64(i%50)
			if i%2 == 1 {
				side, price = market.Sell, ref+1+int64(i%50)
			}
			cmds = append(cmds, limitCmd(a, sym, side, 1, price))
			if i%4 == 0 { // one that finishes at once: the orders table
				cmds = append(cmds, placeCmd(a, sym, market.Buy, market.Limit, market.IOC, 1, ref-100, 0))
			}
		}
		for _, r := range h.apply(cmds...) {
			wantCode(t, r, CodeOK)
		}
		if err := h.f.Flush(); err != nil { // one commit per round
			t.Fatal(err)
		}
	}
	err := h.f.viewFile(func(tx *bolt.Tx) error {
		for _, path := range [][][]byte{{bMarket, bOrders}, {bMarket, bOpen}, {bTrader, bOrderEvents}, {bTrader, bOrderIndex}} {
			b := tx.Bucket(path[0]).Bucket(path[1])
			st := b.Stats()
			if st.LeafPageN < 10 {
				t.Fatalf("%s/%s: only %d leaf pages; the test needs more data", path[0], path[1], st.LeafPageN)
			}
			fill := float64(st.LeafInuse) / float64(st.LeafPageN*tx.DB().Info().PageSize)
			if fill < 0.65 {
				t.Errorf("%s/%s: leaf pages %.0f%% full over %d pages, want at least 65%% (unpacked: about 50%%)", path[0], path[1], 100*fill, st.LeafPageN)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// StatusHash answers with the last walk at once and refreshes it in the
// background: after more commands the first answer is the old index, and
// a later one catches up; only the very first call walks in place.
func TestStatusHashRefreshesInBackground(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	h.apply(deposit(ann, 100))
	first, idx, err := h.f.StatusHash(0)
	if err != nil || first == "" || idx != h.f.AppliedIndex() {
		t.Fatalf("first call: %q@%d (applied %d), %v", first, idx, h.f.AppliedIndex(), err)
	}
	h.apply(deposit(ann, 100), deposit(ann, 100))
	want := h.f.AppliedIndex()
	hash, idx, err := h.f.StatusHash(0)
	if err != nil || hash != first || idx >= want {
		t.Fatalf("stale call: %q@%d, want the old %q below %d, %v", hash, idx, first, want, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for idx != want {
		if time.Now().After(deadline) {
			t.Fatalf("hash still at %d, applied %d", idx, want)
		}
		time.Sleep(5 * time.Millisecond)
		hash, idx, _ = h.f.StatusHash(0)
	}
	if full, fidx, _ := h.f.Hash(); full != hash || fidx != idx {
		t.Fatalf("background hash %q@%d, full walk %q@%d", hash, idx, full, fidx)
	}
}
