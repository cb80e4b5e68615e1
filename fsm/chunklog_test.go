package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
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
func TestChunkedLogsReadBackAcrossChunksAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 1, now: t0}
	sym := exSymbols[0].sym
	ref := exSymbols[0].ref
	wantCode(t, h.apply1(setInstrument(sym, ref)), CodeOK)
	ann, bob := h.register("ann"), h.register("bob")
	h.apply(deposit(ann, 1_000_000_00), deposit(bob, 1_000_000_00), sharesCmd(TypeDepositShares, ann, sym, 10_000))
	const trades = 70 // more than two chunks of the tape
	for i := 0; i < trades; i++ {
		// ann sells one share, bob buys it: one trade, a statement line
		// for each, two order events for ann (resting, filled).
		for _, r := range h.apply(limitCmd(ann, sym, market.Sell, 1, ref), limitCmd(bob, sym, market.Buy, 1, ref)) {
			wantCode(t, r, CodeOK)
		}
		if i%9 == 4 { // some chunks go to the file, the rest stay in layers
			if err := h.f.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
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
	f, err = Open(path, nil)
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

// A state file, or a snapshot, that keeps a log one record per key (the
// layout before chunked logs) is refused: read as chunks its history would
// look empty.
func TestLegacyLogLayoutRefused(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, "legacy.db")
	db, err := bolt.Open(legacy, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket(bMeta); err != nil {
			return err
		}
		tb, err := tx.CreateBucket(bTrader)
		if err != nil {
			return err
		}
		lb, err := tb.CreateBucket([]byte("ledger"))
		if err != nil {
			return err
		}
		return lb.Put(acctSeqKey(1, 1), []byte("old line"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	snap, err := os.ReadFile(legacy)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := Open(legacy, nil); !errors.Is(err, ErrStateFormat) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("Open of a legacy file: %v, want ErrStateFormat", err)
	}
	f := mustOpenPath(t, filepath.Join(dir, "state.db"))
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); !errors.Is(err, ErrRestore) {
		t.Fatalf("Restore of a legacy snapshot: %v, want ErrRestore", err)
	}
}
