package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hats-trading/hats/market"
)

// seqRange is from, from+1, ..., to (empty when to < from).
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// wantSeqs fails unless got lists exactly the sequence numbers want.
func wantSeqs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: sequence numbers %v, want %v", what, got, want)
	}
}

// Statements, order events and the tape are read back exactly, page by
// page across chunk boundaries, whether their chunks are in the file or
// in layers, and their numbering continues across a restart (the next
// number comes from the last chunk).
// chunkTrades opens a state file at path, funds ann and bob, and has ann
// sell bob one share `trades` times: each a trade, a statement line for
// each of them and two order events for ann (resting, filled). Every
// flushEvery-th trade (0: none) the layers go to the file, so chunks end
// up both there and in layers.
func chunkTrades(t *testing.T, path string, trades, flushEvery int) (h *harness, ann uint64) {
	t.Helper()
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h = &harness{t: t, f: f, next: 1, term: 1, now: t0}
	sym, ref := exSymbols[0].sym, exSymbols[0].ref
	wantCode(t, h.apply1(setInstrument(sym, ref)), CodeOK)
	ann, bob := h.register("ann"), h.register("bob")
	h.apply(deposit(ann, 1_000_000_00), deposit(bob, 1_000_000_00), sharesCmd(TypeDepositShares, ann, sym, 10_000))
	for i := 0; i < trades; i++ {
		for _, r := range h.apply(limitCmd(ann, sym, market.Sell, 1, ref), limitCmd(bob, sym, market.Buy, 1, ref)) {
			wantCode(t, r, CodeOK)
		}
		if flushEvery > 0 && i%flushEvery == flushEvery/2 {
			if err := h.f.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h, ann
}

func TestChunkedLogsReadBackAcrossChunksAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	const trades = 70 // more than two chunks of the tape
	h, ann := chunkTrades(t, path, trades, 9)
	f := h.f
	sym := exSymbols[0].sym
	// ann: two deposits (cash, shares) then one sale per trade.
	annLines := uint64(2 + trades)
	check := func(stage string) {
		t.Helper()
		err := h.f.View(func(v *View) error {
			for _, after := range []uint64{0, 1, 30, 31, 32, 33, 63, 64, annLines - 1, annLines, annLines + 5} {
				for _, limit := range []int{0, 1, 5, 40} {
					var got []uint64
					for _, e := range v.Statement(ann, after, limit) {
						got = append(got, e.Seq)
					}
					last := annLines
					if limit > 0 {
						last = min(annLines, after+uint64(limit))
					}
					wantSeqs(t, stage+": statement after "+itoa(after)+" limit "+itoa(uint64(limit)), got, seqRange(after+1, last))
				}
			}
			var ts []uint64
			for _, tr := range v.Trades(sym, 0, 0, 0) {
				ts = append(ts, tr.Seq)
			}
			wantSeqs(t, stage+": the tape", ts, seqRange(1, trades))
			ts = ts[:0]
			for _, tr := range v.Trades(sym, 31, 65, 20) {
				ts = append(ts, tr.Seq)
			}
			wantSeqs(t, stage+": trades 31..65 limit 20", ts, seqRange(31, 50))
			ts = ts[:0]
			for _, tr := range v.RecentTrades(sym, 40) {
				ts = append(ts, tr.Seq)
			}
			want := seqRange(trades-39, trades)
			slices.Reverse(want)
			wantSeqs(t, stage+": 40 recent trades", ts, want)
			if got := v.RecentTrades(exSymbols[1].sym, 5); len(got) != 0 {
				t.Fatalf("%s: recent trades of an idle symbol: %d", stage, len(got))
			}
			last := v.LastOrderEvent(ann)
			if last != 2*trades {
				t.Fatalf("%s: ann's last order event %d, want %d", stage, last, 2*trades)
			}
			var es []uint64
			for _, e := range v.OrderEvents(ann, 60, 10) {
				es = append(es, e.Seq)
				if e.Order == nil || e.Order.Account != ann {
					t.Fatalf("%s: event %d is not ann's order: %+v", stage, e.Seq, e.Order)
				}
			}
			wantSeqs(t, stage+": ann's order events after 60", es, seqRange(61, 70))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("before restart")

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	h.f = f
	check("after restart")
	// New lines continue the numbering from the stored chunks.
	for _, r := range h.apply(deposit(ann, 1), deposit(ann, 2)) {
		wantCode(t, r, CodeOK)
	}
	err = f.View(func(v *View) error {
		var got []uint64
		for _, e := range v.Statement(ann, annLines-1, 0) {
			got = append(got, e.Seq)
		}
		wantSeqs(t, "after restart and two deposits", got, seqRange(annLines, annLines+2))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// Appending to a chunk extends it in place only while the chunk is the
// active layer's: a chunk read from an older layer is copied, so the
// older layer (which a checkpoint or a reader may be using) never changes.
func TestAppendLogCopiesChunksOfOlderLayers(t *testing.T) {
	db := lstOpenDB(t)
	path := lstPaths[0]
	base := lstBegin(t, db)
	key := tradeKey("S", chunkStart(1))
	older := newLayer(nil)
	w := newStx(base, []*layer{older}, true)
	b := lstBucket(t, w, path)
	appendLog(b, key, 1, []byte("one"))
	appendLog(b, key, 2, []byte("two"))
	v1, own := b.getOwn(key)
	if !own {
		t.Fatal("a chunk the active layer wrote is not its own")
	}
	frozen := bytes.Clone(v1)

	newer := newLayer(nil)
	w2 := newStx(base, []*layer{newer, older}, true)
	b2 := lstBucket(t, w2, path)
	if _, own := b2.getOwn(key); own {
		t.Fatal("an older layer's chunk counts as the active layer's")
	}
	appendLog(b2, key, 3, []byte("three"))
	if got, _ := older.tree(path, false).get(key); !bytes.Equal(got.v, frozen) {
		t.Fatalf("the older layer's chunk changed: %q, was %q", got.v, frozen)
	}
	var seqs []uint64
	var recs []string
	scanLog(b2, []byte("S\x00"), 0, func(seq uint64, rec []byte) bool {
		seqs, recs = append(seqs, seq), append(recs, string(rec))
		return true
	})
	wantSeqs(t, "records through the newer layer", seqs, []uint64{1, 2, 3})
	if !slices.Equal(recs, []string{"one", "two", "three"}) {
		t.Fatalf("records %q", recs)
	}
	if got := lastLogSeq(b2, []byte("S\x00")); got != 3 {
		t.Fatalf("last sequence %d, want 3", got)
	}
	if got := lastLogSeq(b2, []byte("R\x00")); got != 0 {
		t.Fatalf("last sequence of an owner with no log %d, want 0", got)
	}
}

// A state file, or a snapshot, that keeps its logs one record per key
// (the layout before chunked logs) is converted on open: the result hashes
// the same as the state the chunked code wrote, and the numbering goes on.
// The legacy file here is made from a chunked one: part of each chunk is
// left in place and the rest moved to the old per-record bucket, so the
// conversion has to extend existing chunks as well as build new ones.
func TestLegacyLogsConvertedOnOpenAndRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	h, ann := chunkTrades(t, path, 45, 0)
	f := h.f
	want, _, err := f.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Un-chunk: records at offset 10 and up of every chunk go back to
	// the old bucket, one key each; the chunks keep the first ten.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	err = db.Update(func(tx *bolt.Tx) error {
		for _, l := range legacyLogs {
			top := tx.Bucket(l.top)
			ob, err := top.CreateBucket(l.old)
			if err != nil {
				return err
			}
			nb := top.Bucket(l.chunked)
			keep := map[string][]byte{}
			err = nb.ForEach(func(k, v []byte) error {
				prefix, start := k[:len(k)-8], binary.BigEndian.Uint64(k[len(k)-8:])
				var head []byte
				var perr error
				chunkRecords(start, v, func(seq uint64, rec []byte) bool {
					if seq-start < 10 {
						head = binary.AppendUvarint(head, seq-start)
						head = binary.AppendUvarint(head, uint64(len(rec)))
						head = append(head, rec...)
						return true
					}
					moved++
					perr = ob.Put(binary.BigEndian.AppendUint64(bytes.Clone(prefix), seq), bytes.Clone(rec))
					return perr == nil
				})
				keep[string(k)] = head
				return perr
			})
			if err != nil {
				return err
			}
			for k, v := range keep {
				if err := nb.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	db.Close()
	if err != nil || moved < 50 {
		t.Fatalf("making the legacy file: %v (%d records moved)", err, moved)
	}
	legacy, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	f, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if got, _, err := f.Hash(); err != nil || got != want {
		t.Fatalf("converted on open: hash %s (%v), the chunked state's %s", got, err, want)
	}
	err = f.viewFile(func(tx *bolt.Tx) error {
		for _, l := range legacyLogs {
			if tx.Bucket(l.top).Bucket(l.old) != nil {
				t.Errorf("%s/%s still there after the conversion", l.top, l.old)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h.f = f
	r := h.apply1(deposit(ann, 1))
	wantCode(t, r, CodeOK)
	_ = f.View(func(v *View) error {
		lines := v.Statement(ann, 0, 0)
		if n := len(lines); n != 2+45+1 || lines[n-1].Seq != uint64(n) {
			t.Fatalf("ann's statement after the conversion and one deposit: %d lines, last seq %d", n, lines[n-1].Seq)
		}
		return nil
	})

	// The same legacy state arriving as a snapshot is converted too.
	f2 := mustOpenPath(t, filepath.Join(dir, "other.db"))
	if err := f2.Restore(io.NopCloser(bytes.NewReader(legacy))); err != nil {
		t.Fatalf("Restore of a legacy snapshot: %v", err)
	}
	if got, _, err := f2.Hash(); err != nil || got != want {
		t.Fatalf("converted on restore: hash %s (%v), the chunked state's %s", got, err, want)
	}
}

// A state file, or a snapshot, that keeps each trader's order index one
// key per order (account | order ID, before session 12) is converted on
// open and on restore: the result hashes the same as the state the
// chunked index wrote, every trader's orders list the same, and the
// numbering goes on with the next order.
func TestLegacyOrderIndexConvertedOnOpenAndRestore(t *testing.T) {
	h, ids, _ := exHarness(t)
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 3*logChunk+5; i++ { // several chunks per account, interleaved
		acct := ids[r.Intn(len(ids))]
		wantCode(t, h.exApply1(limitCmd(acct, "AAA", market.Buy, 1, 9_000-int64(i))), CodeOK)
	}
	lists := func(f *FSM) map[uint64][]uint64 {
		out := map[uint64][]uint64{}
		_ = f.View(func(v *View) error {
			for _, a := range ids {
				for _, o := range v.Orders(a, false, "", 0) {
					out[a] = append(out[a], o.ID)
				}
			}
			return nil
		})
		return out
	}
	wantLists := lists(h.f)
	// Un-chunk: the index goes back to one key per order.
	moved := 0
	want, path, legacy := hashAndRewrite(t, h, func(tx *bolt.Tx) error {
		top := tx.Bucket(bTrader)
		ob, err := top.CreateBucket(legacyOrderIndex)
		if err != nil {
			return err
		}
		err = top.Bucket(bOrderIndex).ForEach(func(k, v []byte) error {
			var perr error
			chunkRecords(binary.BigEndian.Uint64(k[8:]), v, func(_ uint64, rec []byte) bool {
				moved++
				perr = ob.Put(append(bytes.Clone(k[:8]), rec...), nil)
				return perr == nil
			})
			return perr
		})
		if err != nil {
			return err
		}
		return top.DeleteBucket(bOrderIndex)
	})
	if moved != 3*logChunk+5 {
		t.Fatalf("making the legacy file: %d orders moved", moved)
	}

	h.f = mustOpenPath(t, path)
	if got, _, err := h.f.Hash(); err != nil || got != want {
		t.Fatalf("converted on open: hash %s (%v), the chunked state's %s", got, err, want)
	}
	if got := lists(h.f); !reflect.DeepEqual(got, wantLists) {
		t.Fatalf("orders listed after the conversion:\n%v\nbefore:\n%v", got, wantLists)
	}
	err := h.f.viewFile(func(tx *bolt.Tx) error {
		if tx.Bucket(bTrader).Bucket(legacyOrderIndex) != nil {
			t.Error("the per-key order index is still there after the conversion")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	next := h.exApply1(limitCmd(ids[0], "AAA", market.Buy, 1, 8_000))
	wantCode(t, next, CodeOK)
	_ = h.f.View(func(v *View) error {
		got := v.Orders(ids[0], false, "", 2)
		if len(got) != 2 || got[0].ID != next.Order.ID || got[1].ID != wantLists[ids[0]][0] {
			t.Fatalf("newest two of the converted index after one more order: %v", got)
		}
		return nil
	})

	// The same legacy state arriving as a snapshot is converted too.
	f2 := mustOpenPath(t, filepath.Join(t.TempDir(), "other.db"))
	if err := f2.Restore(io.NopCloser(bytes.NewReader(legacy))); err != nil {
		t.Fatalf("Restore of a legacy snapshot: %v", err)
	}
	if got, _, err := f2.Hash(); err != nil || got != want {
		t.Fatalf("converted on restore: hash %s (%v), the chunked state's %s", got, err, want)
	}
}

// A state whose open set holds symbols and whose orders table holds every
// order's record (before session 12) is converted on open and on
// restore: the result hashes the same as the state the new layout wrote,
// the books and every order read the same, and trading goes on.
func TestLegacyOpenSetConvertedOnOpenAndRestore(t *testing.T) {
	h, ids, l := exHarness(t)
	r := rand.New(rand.NewSource(5))
	for i := 0; i < 300; i++ {
		acct := ids[r.Intn(len(ids))]
		side := market.Side(1 + r.Intn(2))
		price := 10_000 - 50 + int64(r.Intn(100))
		if side == market.Sell {
			price += 20
		}
		wantCode(t, h.exApply1(limitCmd(acct, "AAA", side, 1+int64(r.Intn(3)), price)), CodeOK)
	}
	type snapshot struct {
		open  []uint64
		all   map[uint64][]uint64
		books string
	}
	look := func(f *FSM) snapshot {
		s := snapshot{all: map[uint64][]uint64{}}
		_ = f.View(func(v *View) error {
			for _, o := range v.OpenOrders() {
				s.open = append(s.open, o.ID)
			}
			for _, a := range ids {
				for _, o := range v.Orders(a, false, "", 0) {
					s.all[a] = append(s.all[a], o.ID*10+uint64(o.Status))
				}
			}
			return nil
		})
		b, _ := f.Book("AAA", 100)
		s.books = fmt.Sprintf("%+v", *b)
		return s
	}
	want := look(h.f)
	if len(want.open) < 20 || len(want.open) > 280 {
		t.Fatalf("%d open orders of 300: the test needs both kinds", len(want.open))
	}
	// Back to the old layout: every record in the orders table, symbols
	// in the open set, no mark.
	wantHash, path, legacy := hashAndRewrite(t, h, func(tx *bolt.Tx) error {
		mb := tx.Bucket(bMarket)
		open, orders := mb.Bucket(bOpen), mb.Bucket(bOrders)
		recs := map[string][]byte{}
		if err := open.ForEach(func(k, v []byte) error { recs[string(k)] = bytes.Clone(v); return nil }); err != nil {
			return err
		}
		for k, v := range recs {
			o := decodeWhole(v, decodeOrder, "order")
			if err := orders.Put([]byte(k), v); err != nil {
				return err
			}
			if err := open.Put([]byte(k), []byte(o.Symbol)); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Delete(kOpenRecords)
	})

	h.f = mustOpenPath(t, path)
	if got, _, err := h.f.Hash(); err != nil || got != wantHash {
		t.Fatalf("converted on open: hash %s (%v), the new layout's %s", got, err, wantHash)
	}
	if got := look(h.f); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the conversion:\n%+v\nbefore:\n%+v", got, want)
	}
	// Trading goes on against the rebuilt books.
	for i := 0; i < 50; i++ {
		acct := ids[r.Intn(len(ids))]
		wantCode(t, h.exApply1(placeCmd(acct, "AAA", market.Side(1+r.Intn(2)), market.Market, market.IOC, 1, 0, 0)), CodeOK)
	}
	checkExchange(t, h.f, l)

	f2 := mustOpenPath(t, filepath.Join(t.TempDir(), "other.db"))
	if err := f2.Restore(io.NopCloser(bytes.NewReader(legacy))); err != nil {
		t.Fatalf("Restore of a legacy snapshot: %v", err)
	}
	if got, _, err := f2.Hash(); err != nil || got != wantHash {
		t.Fatalf("converted on restore: hash %s (%v), the new layout's %s", got, err, wantHash)
	}
}

// hashAndRewrite closes h's state, returns its hash, then rewrites the
// file with edit (in one bbolt transaction) and returns the new file's
// bytes: a state in an older layout, for the conversion tests.
func hashAndRewrite(t *testing.T, h *harness, edit func(tx *bolt.Tx) error) (hash string, path string, file []byte) {
	t.Helper()
	hash, _, err := h.f.Hash()
	if err != nil {
		t.Fatal(err)
	}
	path = h.f.path
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(edit)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("rewriting the state file: %v", err)
	}
	if file, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	return hash, path, file
}
