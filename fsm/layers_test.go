package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hats-trading/hats/market"
)

// pollUntil polls cond until it holds or a generous deadline passes.
func pollUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Applying never waits for the state file: with the checkpoint writer
// held, commands keep applying and reads see them while nothing reaches
// the file, until maxFrozen layers are queued; then applying waits, and it
// resumes once the writer catches up, with everything in the file.
func TestApplyDoesNotWaitForCheckpoint(t *testing.T) {
	hold := make(chan struct{})
	var held atomic.Int32
	f := mustOpenOpts(t, Options{CommitInterval: time.Hour, CommitMaxCommands: 1})
	f.beforeCheckpoint = func() { held.Add(1); <-hold }
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann") // freezes the first layer; the writer takes it and is held
	pollUntil(t, "the checkpoint writer to take the first layer", func() bool { return held.Load() == 1 })

	for range maxFrozen - 1 {
		h.apply(deposit(ann, 1))
	}
	if got := cash(t, f, ann); got != maxFrozen-1 {
		t.Fatalf("cash = %d while the writer is held, want %d: applied commands must be readable", got, maxFrozen-1)
	}
	if got := committedIndex(t, f); got != 0 {
		t.Fatalf("file holds index %d while the writer is held, want 0", got)
	}

	// The next batch finds maxFrozen layers queued and waits for room.
	logs := h.logs(deposit(ann, 1))
	done := make(chan struct{})
	go func() { f.ApplyBatch(logs); close(done) }()
	pollUntil(t, "ApplyBatch to wait for room", func() bool { return f.applyWaits.Load() == 1 })
	if idx, queued, waits := f.CheckpointStats(); idx != 0 || queued != maxFrozen || waits != 1 {
		t.Fatalf("checkpoint stats while held: index %d, queued %d, waits %d; want 0, %d, 1", idx, queued, waits, maxFrozen)
	}
	// A status poll does not wait for the apply lock.
	f.txMu.Lock()
	stats := make(chan int, 1)
	go func() { _, q, _ := f.CheckpointStats(); stats <- q }()
	select {
	case q := <-stats:
		if q != maxFrozen {
			t.Errorf("queued %d under the apply lock, want %d", q, maxFrozen)
		}
	case <-time.After(10 * time.Second):
		t.Error("CheckpointStats waited for the apply lock")
	}
	f.txMu.Unlock()
	select {
	case <-done:
		t.Fatal("ApplyBatch went past maxFrozen queued layers")
	default:
	}
	close(hold)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ApplyBatch still waiting after the checkpoint writer was released")
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := committedIndex(t, f), f.AppliedIndex(); got != want {
		t.Fatalf("after Flush the file holds %d, applied %d", got, want)
	}
	if idx, queued, _ := f.CheckpointStats(); idx != f.AppliedIndex() || queued != 0 {
		t.Fatalf("checkpoint stats after Flush: index %d, queued %d; want %d, 0", idx, queued, f.AppliedIndex())
	}
	if got := cash(t, f, ann); got != maxFrozen {
		t.Fatalf("cash = %d, want %d", got, maxFrozen)
	}
}

// A snapshot is the state exactly at the index it was taken at, even when
// the checkpoint writer is behind and more entries are applied before it
// is persisted; and taking it does not wait for the writer.
func TestSnapshotIsExactWhileCheckpointLags(t *testing.T) {
	hold := make(chan struct{})
	f := mustOpenOpts(t, Options{CommitInterval: time.Hour})
	f.beforeCheckpoint = func() { <-hold }
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ref := newHarness(t) // the same commands, stopping at the snapshot
	for _, x := range []*harness{h, ref} {
		ann := x.register("ann")
		x.apply(deposit(ann, 500), deposit(ann, 250))
	}
	at := f.AppliedIndex()

	type snapOut struct {
		s   raft.FSMSnapshot
		err error
	}
	got := make(chan snapOut, 1)
	go func() { s, err := f.Snapshot(); got <- snapOut{s, err} }()
	var snap raft.FSMSnapshot
	select {
	case o := <-got:
		if o.err != nil {
			t.Fatal(o.err)
		}
		snap = o.s
	case <-time.After(10 * time.Second):
		t.Fatal("Snapshot waited for the held checkpoint writer")
	}
	h.apply(deposit(1, 7), deposit(1, 11)) // after the snapshot, before it is persisted
	close(hold)
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	g := mustOpen(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != at {
		t.Fatalf("restored index %d, want the snapshot's %d", g.AppliedIndex(), at)
	}
	if hashOf(t, g) != hashOf(t, ref.f) {
		t.Fatal("snapshot differs from the state at its index")
	}
	if c := cash(t, f, 1); c != 768 {
		t.Fatalf("source cash = %d, want 768", c)
	}
}

// Close commits every layer, so a reopened state file holds everything
// applied, even with a checkpoint interval far in the future.
func TestCloseCommitsLayers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := OpenWith(path, nil, Options{CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann")
	for range 50 {
		h.apply(deposit(ann, 3))
	}
	want, wantHash := f.AppliedIndex(), hashOf(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g := mustOpenPath(t, path)
	if g.AppliedIndex() != want || hashOf(t, g) != wantHash || cash(t, g, ann) != 150 {
		t.Fatalf("reopened at %d (want %d), cash %d (want 150)", g.AppliedIndex(), want, cash(t, g, ann))
	}
}

// Idempotency pruning resumes where it stopped (a cache); a record that
// lands before that point, when the leader clock stepped back, is still
// pruned, and a replica without the cache (reopened) prunes exactly the
// same records.
func TestIdempotencyPruneResumeIsOnlyACache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := OpenWith(path, nil, Options{CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ref := newHarness(t)
	ttl := int64(IdempotencyTTL)
	var ann uint64
	for _, x := range []*harness{h, ref} {
		ann = x.register("ann")
		for i := range 3 * maxPrunePerCommand {
			x.apply(keyed(at(deposit(ann, 1), t0+int64(i)), fmt.Sprintf("old-%d", i)))
		}
		// Prunes the oldest maxPrunePerCommand records.
		x.apply(keyed(at(deposit(ann, 1), t0+ttl+int64(time.Hour)), "late-1"))
	}
	// The reference replica restarts here and loses its cache.
	if err := ref.f.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := OpenWith(ref.f.path, nil, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reopened.Close() })
	ref.f = reopened
	for _, x := range []*harness{h, ref} {
		// A record from a clock that stepped back: before where pruning stopped.
		x.apply(keyed(at(deposit(ann, 1), t0+1), "stepped-back"))
		for i := range 4 {
			x.apply(keyed(at(deposit(ann, 1), t0+ttl+2*int64(time.Hour)+int64(i)), fmt.Sprintf("late-%d", i+2)))
		}
	}
	if hashOf(t, h.f) != hashOf(t, ref.f) {
		t.Fatal("replica with the prune cache and replica without it differ")
	}
	r := h.apply1(keyed(at(deposit(ann, 1), t0+ttl+3*int64(time.Hour)), "stepped-back"))
	if r.Replay {
		t.Fatal("the record stamped before the prune point was never pruned")
	}
}

// ordered returns the positions of every change in key order.
func (t *ltree) ordered() []int32 {
	main, tail := t.runs()
	if len(tail) == 0 {
		return main
	}
	return t.merge(main, tail)
}

// The key order of a layer's bucket stays exact through thousands of keys
// arriving out of order, read between writes (the late-key run is merged
// into the main run many times over), in the active layer and once it is
// frozen.
func TestLayerKeyOrderWithManyLateKeys(t *testing.T) {
	tr := newLtree(0)
	model := map[string]bool{} // key -> deleted
	rng := uint64(12345)
	next := func() uint64 { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng }
	check := func(step int) {
		keys := make([]string, 0, len(model))
		for k := range model {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		ord := tr.ordered()
		if len(ord) != len(keys) {
			t.Fatalf("step %d: %d keys in order, want %d", step, len(ord), len(keys))
		}
		for i, p := range ord {
			if it := tr.ents[p]; string(it.k) != keys[i] || it.del != model[keys[i]] {
				t.Fatalf("step %d: position %d is %q (del %v), want %q (del %v)", step, i, it.k, it.del, keys[i], model[keys[i]])
			}
		}
		for range 20 {
			probe := []byte(fmt.Sprintf("%06d", next()%1_000_000))
			j, _ := slices.BinarySearch(keys, string(probe))
			got, ok := tr.ge(probe, false)
			if want := j < len(keys); ok != want || (ok && string(got.k) != keys[j]) {
				t.Fatalf("step %d: ge(%s) = %q %v", step, probe, got.k, ok)
			}
			got, ok = tr.lt(probe)
			if want := j > 0; ok != want || (ok && string(got.k) != keys[j-1]) {
				t.Fatalf("step %d: lt(%s) = %q %v", step, probe, got.k, ok)
			}
		}
	}
	inc := 500_000
	for step := range 6000 {
		var k string
		switch r := next() % 10; {
		case r < 4: // increasing, like sequence numbers
			inc++
			k = fmt.Sprintf("%06d", inc)
		default:
			k = fmt.Sprintf("%06d", next()%500_000)
		}
		del := next()%5 == 0
		tr.put(kv{k: []byte(k), v: []byte("v"), del: del})
		model[k] = del
		if step%7 == 0 {
			check(step)
		}
	}
	check(-1)
	frozen := &layer{buckets: map[string]*ltree{"b": tr}}
	done := make(chan struct{})
	go func() { defer close(done); _ = frozen.buckets["b"].ordered() }() // writer and reader share a frozen layer
	check(-2)
	<-done
}

// Flush waits for the layers holding what was applied when it was called,
// not for an empty queue: with newer layers still queued behind a slow
// writer it returns as soon as its own are in the file.
func TestFlushDoesNotWaitForNewerLayers(t *testing.T) {
	tokens := make(chan struct{}) // one per layer the writer may commit
	f := mustOpenOpts(t, Options{CommitInterval: time.Hour, CommitMaxCommands: 1})
	f.beforeCheckpoint = func() { <-tokens }
	t.Cleanup(func() { close(tokens) })
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann") // layer 1, frozen; the writer waits for a token
	want := f.AppliedIndex()
	flushed := make(chan error, 1)
	go func() { flushed <- f.Flush() }()
	pollUntil(t, "Flush to wait", func() bool { return f.flushes.Load() == 1 })
	h.apply(deposit(ann, 1)) // layer 2, queued behind layer 1
	tokens <- struct{}{}     // layer 1 only
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Flush still waiting with its layer in the file and a newer one queued")
	}
	if got := committedIndex(t, f); got != want {
		t.Fatalf("file holds %d, want %d (layer 1)", got, want)
	}
	f.txMu.Lock()
	queued := len(f.frozen)
	f.txMu.Unlock()
	if queued != 1 {
		t.Fatalf("%d layers queued, want layer 2 still waiting", queued)
	}
}

// Where the address space cannot hold the up-front mapping, the state
// file still opens, with the smaller one.
func TestOpenFallsBackToASmallerMapping(t *testing.T) {
	old := initialMmap
	initialMmap = 1 << 47 // past the user address space of amd64 and arm64 Linux
	t.Cleanup(func() { initialMmap = old })
	var logs bytes.Buffer
	f, err := OpenWith(filepath.Join(t.TempDir(), "state.db"), slog.New(slog.NewTextHandler(&logs, nil)), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if !strings.Contains(logs.String(), "mapping 1 GiB instead") {
		t.Fatalf("no fallback logged; logs: %s", logs.String())
	}
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ann := h.register("ann")
	h.apply(deposit(ann, 5))
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if cash(t, f, ann) != 5 || committedIndex(t, f) != f.AppliedIndex() {
		t.Fatal("state file opened with the fallback mapping does not work")
	}
}

// The member generation moves with every member change, restore or
// reload, and only then (callers cache member addresses on it).
func TestMembersGenMovesWithMemberChanges(t *testing.T) {
	h := newHarness(t)
	f := h.f
	g0 := f.MembersGen()
	h.apply1(&Command{Type: TypeSetNode, NodeID: "n1", RaftAddr: "127.0.0.1:1", HTTPAddr: "127.0.0.1:2"})
	g1 := f.MembersGen()
	if g1 == g0 {
		t.Fatal("set-node did not move the member generation")
	}
	ann := h.register("ann")
	h.apply(deposit(ann, 1), deposit(ann, 2))
	if f.MembersGen() != g1 {
		t.Fatal("non-member commands moved the member generation")
	}
	h.apply1(&Command{Type: TypeRemoveNode, NodeID: "n1"})
	g2 := f.MembersGen()
	if g2 == g1 {
		t.Fatal("remove-node did not move the member generation")
	}
	snap := snapshotBytes(t, f)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if f.MembersGen() == g2 {
		t.Fatal("restore did not move the member generation")
	}
}

// HasSymbol follows the applied state without a transaction: a listed
// instrument shows at once, and a restore to a state without it (or a
// reopen of the file) publishes the set that state holds.
func TestHasSymbolFollowsState(t *testing.T) {
	h := newHarness(t)
	f := h.f
	if f.HasSymbol("AAA") {
		t.Fatal("empty state lists AAA")
	}
	empty := snapshotBytes(t, f)
	wantCode(t, h.apply1(setInstrument("AAA", 10_000)), CodeOK)
	if !f.HasSymbol("AAA") || f.HasSymbol("BBB") {
		t.Fatalf("after listing AAA: AAA %v, BBB %v", f.HasSymbol("AAA"), f.HasSymbol("BBB"))
	}
	wantCode(t, h.apply1(setInstrument("AAA", 12_000)), CodeOK) // re-pricing keeps it
	if !f.HasSymbol("AAA") {
		t.Fatal("re-pricing AAA dropped it")
	}
	listed := snapshotBytes(t, f)
	if err := f.Restore(io.NopCloser(bytes.NewReader(empty))); err != nil {
		t.Fatal(err)
	}
	if f.HasSymbol("AAA") {
		t.Fatal("restore to a state without AAA still lists it")
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(listed))); err != nil {
		t.Fatal(err)
	}
	if !f.HasSymbol("AAA") {
		t.Fatal("restore to a state with AAA does not list it")
	}
}

// An order that never rested leaves nothing in the open set, not even a
// deletion: only orders that were open are taken out of it.
func TestOpenSetDeletesOnlyOrdersThatRested(t *testing.T) {
	h, ids, l := exHarness(t)
	ann, bob := ids[0], ids[1]
	maker := h.exApply1(limitCmd(bob, "AAA", market.Sell, 5, 10_000))
	wantCode(t, maker, CodeOK)
	h.f.txMu.Lock()
	h.f.freezeLocked() // the next commands land in a fresh layer
	h.f.txMu.Unlock()
	taker := h.exApply1(placeCmd(ann, "AAA", market.Buy, market.Market, market.IOC, 5, 0, 0))
	wantCode(t, taker, CodeOK)
	rejected := h.exApply1(limitCmd(ann, "AAA", market.Buy, 0, 10_000))
	if taker.Order.Status != market.Filled || rejected.Order == nil || rejected.Order.Status != market.Rejected {
		t.Fatalf("taker %+v, rejected %+v", taker.Order, rejected.Order)
	}
	h.f.txMu.Lock()
	var got []uint64
	if tr := h.f.active.buckets["market/open"]; tr != nil {
		for _, e := range tr.ents {
			if !e.del {
				t.Errorf("open set gained order %d", binary.BigEndian.Uint64(e.k))
			}
			got = append(got, binary.BigEndian.Uint64(e.k))
		}
	}
	h.f.txMu.Unlock()
	if len(got) != 1 || got[0] != maker.Order.ID {
		t.Fatalf("open-set deletions %v, want only the maker %d", got, maker.Order.ID)
	}
	checkExchange(t, h.f, l)
}

// Keys whose hashes collide are told apart by their bytes: each keeps its
// own change, an update reaches the right one, a missing key with a taken
// hash is not found, and the key order is unaffected.
func TestLayerIndexHashCollisions(t *testing.T) {
	l := newLtree(0)
	const h = 7
	for _, it := range []kv{
		{k: []byte("b"), v: []byte("1")},
		{k: []byte("a"), v: []byte("2")}, // same hash as b: kept apart
		{k: []byte("c"), v: []byte("3")},
		{k: []byte("a"), v: []byte("22")}, // update of a collided key
		{k: []byte("b"), del: true},       // update of the first key with the hash
	} {
		l.putHashed(it, h)
	}
	want := map[string]kv{"a": {v: []byte("22")}, "b": {del: true}, "c": {v: []byte("3")}}
	for k, w := range want {
		i, ok := l.find([]byte(k), h)
		if !ok || string(l.ents[i].v) != string(w.v) || l.ents[i].del != w.del {
			t.Errorf("key %q: found %v, change %+v, want %+v", k, ok, l.ents[i], w)
		}
	}
	if _, ok := l.find([]byte("x"), h); ok {
		t.Error("a key never put was found through a taken hash")
	}
	if _, ok := l.find([]byte("a"), h+1); ok {
		t.Error("a key was found under a hash it does not have")
	}
	if len(l.ents) != 3 {
		t.Fatalf("%d changes for 3 keys", len(l.ents))
	}
	main, tail := l.runs()
	var order []string
	for _, i := range l.merge(main, tail) {
		order = append(order, string(l.ents[i].k))
	}
	if strings.Join(order, ",") != "a,b,c" {
		t.Fatalf("key order %v, want a,b,c", order)
	}
	// The hashed index serves plain gets too.
	n := newLtree(0)
	n.put(kv{k: []byte("k1"), v: []byte("v1")})
	if got, ok := n.get([]byte("k1")); !ok || string(got.v) != "v1" {
		t.Fatalf("get k1: %+v %v", got, ok)
	}
	if _, ok := n.get([]byte("k2")); ok {
		t.Fatal("get of a missing key found one")
	}
}

// The apply loop's transaction is kept from one ApplyBatch to the next
// only while the layers it reads through are the current ones: a freeze
// releases it, and so does a checkpoint dropping a layer (the next batch
// opens a new one over the newer file), and a restore releases it with
// the file it replaces. Whatever the transaction, the
// state matches a replica that committed every command at once, and Close
// does not wait on a kept read transaction.
func TestApplyTransactionLastsWhileLayersDo(t *testing.T) {
	hold := make(chan struct{})
	var release sync.Once
	f := mustOpenOpts(t, Options{CommitInterval: time.Hour})
	f.beforeCheckpoint = func() { <-hold }
	t.Cleanup(func() { release.Do(func() { close(hold) }) }) // before Close, if the test stops early
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	ref := newHarness(t)
	both := func(cmds ...*Command) []*Result {
		t.Helper()
		res := h.apply(cmds...)
		for i, r := range ref.apply(cmds...) {
			if r.Code != res[i].Code {
				t.Fatalf("command %d: %s here, %s on the reference", i, res[i].Code, r.Code)
			}
		}
		return res
	}
	kept := func() *stx {
		f.txMu.Lock()
		defer f.txMu.Unlock()
		return f.applyTx
	}
	sym := exSymbols[0]
	both(setInstrument(sym.sym, sym.ref))
	ann := h.register("ann")
	ref.register("ann")
	both(deposit(ann, 1_000_000), sharesCmd(TypeDepositShares, ann, sym.sym, 500))
	first := kept()
	if first == nil {
		t.Fatal("no transaction kept after a batch")
	}
	placed := both(limitCmd(ann, sym.sym, market.Buy, 10, sym.ref-100))[0]
	if kept() != first {
		t.Fatal("the next batch over the same layers opened a new transaction")
	}

	// A freeze releases it; the frozen layer waits for the held writer.
	f.txMu.Lock()
	f.freezeLocked()
	f.txMu.Unlock()
	if first.base.DB() != nil || kept() != nil {
		t.Fatal("a freeze left the kept transaction open")
	}
	both(deposit(ann, 7))
	second := kept()
	if second == nil || second == first {
		t.Fatal("no new transaction after the freeze")
	}
	// The writer commits the frozen layer and drops it: the kept
	// transaction no longer matches the layers.
	release.Do(func() { close(hold) })
	pollUntil(t, "the checkpoint writer to drop the frozen layer", func() bool {
		_, queued, _ := f.CheckpointStats()
		return queued == 0
	})
	// The order placed before the freeze is now only in the file.
	both(&Command{Type: TypeCancelOrder, Account: ann, OrderID: placed.Order.ID})
	third := kept()
	if third == second || second.base.DB() != nil {
		t.Fatal("a batch after a checkpoint dropped a layer reused the old transaction")
	}
	if got, want := hashOf(t, f), hashOf(t, ref.f); got != want {
		t.Fatal("state differs from a replica that committed every command at once")
	}

	// Near the end of the file's mapping none is kept between batches.
	f.txMu.Lock()
	f.mapped = 0
	f.txMu.Unlock()
	both(deposit(ann, 11))
	if kept() != nil {
		t.Fatal("a transaction was kept with the file near the end of its mapping")
	}
	both(deposit(ann, 13)) // and batches still apply
	f.txMu.Lock()
	f.mapped = initialMmap
	f.txMu.Unlock()
	both(deposit(ann, 17))
	if kept() == nil {
		t.Fatal("no transaction kept once the file is well inside its mapping again")
	}
	// A restore replaces the file: the kept transaction goes with the
	// old one, which then closes (nothing else reads it), and batches
	// after it apply over the restored state.
	sink := &memSink{}
	snap, err := ref.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if kept() != nil {
		t.Fatal("a restore left the old file's transaction kept")
	}
	oldClosed := make(chan struct{})
	go func() { f.oldDBs.Wait(); close(oldClosed) }()
	select {
	case <-oldClosed:
	case <-time.After(10 * time.Second):
		t.Fatal("the file a restore replaced is still open")
	}
	h.next = f.AppliedIndex() + 1
	both(deposit(ann, 19))
	if got, want := hashOf(t, f), hashOf(t, ref.f); got != want {
		t.Fatal("state after a restore differs from the reference")
	}

	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited on the kept read transaction")
	}
}
