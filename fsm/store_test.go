package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Model-based tests of the layered store (store.go): random writes,
// freezes and checkpoints, with every read path (Get, ForEach, cursors,
// through read-only and writable transactions) compared against a plain
// map of the logical state.

// The test's bucket layout. The key space is every 1-3 byte key over a
// four-byte alphabet, so prefixes, collisions and the 0x00/0xff edges
// come up all the time. "top" holds two nested buckets whose names lie
// outside the key space (one between keys, one after every key); as in
// bbolt, a cursor over "top" yields them with a nil value.
var (
	lstAlphabet = []byte{0x00, 'a', 'b', 0xff}
	lstSubs     = []string{"a\x01", "\xff\xff\xff\xff"}
	lstPaths    = []string{"aux", "top", "top/a\x01", "top/\xff\xff\xff\xff"}
	lstKeys     = lstKeySpace()
	// lstSpecial are Seek bounds at the edges of the key space.
	lstSpecial = []string{"", "\x00", "\x00\x00\x00\x00", "a\x01", "a\x01\x00", "a\x00\xff\xff",
		"b\xff\xff\xff", "\xfe", "\xff\xff\xff", "\xff\xff\xff\x00", "\xff\xff\xff\xff",
		"\xff\xff\xff\xff\x00", "\xff\xff\xff\xff\xff"}
)

const lstTop = "top"

func lstKeySpace() []string {
	var keys []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if n == 0 {
			return
		}
		for _, c := range lstAlphabet {
			k := prefix + string([]byte{c})
			keys = append(keys, k)
			gen(k, n-1)
		}
	}
	gen("", 3)
	sort.Strings(keys)
	return keys
}

// lstModel is the logical state: bucket path -> key -> value.
type lstModel map[string]map[string][]byte

func newLstModel() lstModel {
	m := lstModel{}
	for _, p := range lstPaths {
		m[p] = map[string][]byte{}
	}
	return m
}

func (m lstModel) clone() lstModel {
	c := lstModel{}
	for p, kvs := range m {
		c[p] = make(map[string][]byte, len(kvs))
		for k, v := range kvs {
			c[p][k] = v
		}
	}
	return c
}

// lstEntry is one key a cursor over a bucket should yield.
type lstEntry struct {
	k      string
	v      []byte
	bucket bool // a nested bucket: value nil
}

// entries is what a cursor over path should yield, in order.
func (m lstModel) entries(path string) []lstEntry {
	var out []lstEntry
	for k, v := range m[path] {
		out = append(out, lstEntry{k: k, v: v})
	}
	if path == lstTop {
		for _, s := range lstSubs {
			out = append(out, lstEntry{k: s, bucket: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].k < out[j].k })
	return out
}

// lstLowerBound is the index of the first entry at or after k (len: none).
func lstLowerBound(ents []lstEntry, k string) int {
	return sort.Search(len(ents), func(i int) bool { return ents[i].k >= k })
}

// lstUpperBound is the index of the first entry after k (len: none).
func lstUpperBound(ents []lstEntry, k string) int {
	return sort.Search(len(ents), func(i int) bool { return ents[i].k > k })
}

// lstMatch reports whether a cursor result is entry i of ents (i < 0 or
// i >= len(ents): the end, a nil key and value).
func lstMatch(ents []lstEntry, i int, k, v []byte) bool {
	if i < 0 || i >= len(ents) {
		return k == nil && v == nil
	}
	e := ents[i]
	if k == nil || string(k) != e.k {
		return false
	}
	if e.bucket {
		return v == nil
	}
	return v != nil && bytes.Equal(v, e.v)
}

func lstWant(ents []lstEntry, i int) string {
	if i < 0 || i >= len(ents) {
		return "end (nil, nil)"
	}
	if ents[i].bucket {
		return fmt.Sprintf("(%q, nil) [nested bucket]", ents[i].k)
	}
	return fmt.Sprintf("(%q, %q)", ents[i].k, ents[i].v)
}

func lstGot(k, v []byte) string {
	if k == nil && v == nil {
		return "end (nil, nil)"
	}
	vs := fmt.Sprintf("%q", v)
	if v == nil {
		vs = "nil"
	}
	ks := fmt.Sprintf("%q", k)
	if k == nil {
		ks = "nil"
	}
	return "(" + ks + ", " + vs + ")"
}

func lstOpenDB(t *testing.T) *bolt.DB {
	t.Helper()
	// A large initial mmap: the test holds read transactions across
	// checkpoints in one goroutine, and bbolt's remap would wait for them.
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600,
		&bolt.Options{InitialMmapSize: 1 << 26, NoSync: true})
	if err != nil {
		t.Fatalf("open bbolt: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bolt.Tx) error {
		for _, p := range lstPaths {
			top, sub, nested := strings.Cut(p, "/")
			b, err := tx.CreateBucketIfNotExists([]byte(top))
			if err != nil {
				return err
			}
			if nested {
				if _, err := b.CreateBucket([]byte(sub)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("create buckets: %v", err)
	}
	return db
}

// lstBucket resolves a bucket path in an stx.
func lstBucket(t *testing.T, s *stx, path string) *sbucket {
	t.Helper()
	top, sub, nested := strings.Cut(path, "/")
	b := s.Bucket([]byte(top))
	if b != nil && nested {
		b = b.Bucket([]byte(sub))
	}
	if b == nil {
		t.Fatalf("bucket %q missing from stx", path)
	}
	return b
}

// lstRun is one seed's run: the bbolt file, the layers and the model.
type lstRun struct {
	t     *testing.T
	seed  uint64
	step  int
	rng   *rand.Rand
	db    *bolt.DB
	model lstModel

	active *layer
	frozen []*layer // newest first
	w      *stx     // the writable stx: active + frozen over a read tx

	// frozenModel is the state of the file plus the frozen layers: the
	// model as of the last freeze.
	frozenModel lstModel
	// snap is a read-only stx over the frozen layers taken at the last
	// freeze and held across later writes and checkpoints.
	snap      *stx
	snapModel lstModel

	putBias int // percent of writes that are puts (changes by phase)
	recent  []string
}

func (r *lstRun) note(format string, args ...any) {
	r.recent = append(r.recent, fmt.Sprintf("step %d: ", r.step)+fmt.Sprintf(format, args...))
	if len(r.recent) > 24 {
		r.recent = r.recent[len(r.recent)-24:]
	}
}

func (r *lstRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d step %d (%d frozen layers): %s\nrecent operations:\n  %s",
		r.seed, r.step, len(r.frozen), fmt.Sprintf(format, args...), strings.Join(r.recent, "\n  "))
}

func (r *lstRun) layers() []*layer {
	return append([]*layer{r.active}, r.frozen...)
}

func (r *lstRun) openW() {
	base, err := r.db.Begin(false)
	if err != nil {
		r.fatalf("begin read tx: %v", err)
	}
	r.w = newStx(base, r.layers(), true)
}

func (r *lstRun) closeW() {
	if err := r.w.base.Rollback(); err != nil {
		r.fatalf("rollback writable stx base: %v", err)
	}
	r.w = nil
}

func (r *lstRun) randKey() string {
	return lstKeys[r.rng.IntN(len(lstKeys))]
}

// randProbe is a Seek bound: often a key of the key space, often not.
func (r *lstRun) randProbe() string {
	switch n := r.rng.IntN(10); {
	case n < 5:
		return r.randKey()
	case n < 9:
		alpha := append([]byte{0x01, 0xfe}, lstAlphabet...)
		b := make([]byte, r.rng.IntN(5))
		for i := range b {
			b[i] = alpha[r.rng.IntN(len(alpha))]
		}
		return string(b)
	default:
		return lstSpecial[r.rng.IntN(len(lstSpecial))]
	}
}

func (r *lstRun) randValue() []byte {
	switch n := r.rng.IntN(20); {
	case n < 3:
		return []byte{}
	case n < 4:
		return nil // stored as an empty value
	default:
		// Unique per step, so a stale layer's value is caught.
		v := fmt.Appendf(nil, "s%d:", r.step)
		for range r.rng.IntN(4) {
			v = append(v, byte(r.rng.IntN(256)))
		}
		return v
	}
}

func (r *lstRun) randPath() string { return lstPaths[r.rng.IntN(len(lstPaths))] }

// modelKeys is path's keys in the model (not nested buckets), sorted.
func (r *lstRun) modelKeys(path string) []string {
	keys := make([]string, 0, len(r.model[path]))
	for k := range r.model[path] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (r *lstRun) put(path, k string, v []byte) {
	b := lstBucket(r.t, r.w, path)
	r.note("put %q %q = %q (nil value: %v)", path, k, v, v == nil)
	if err := b.Put([]byte(k), v); err != nil {
		r.fatalf("put %q %q: %v", path, k, err)
	}
	if v == nil {
		v = []byte{}
	}
	r.model[path][k] = v
}

func (r *lstRun) del(path, k string) {
	_, had := r.model[path][k]
	r.note("delete %q %q (present: %v)", path, k, had)
	if err := lstBucket(r.t, r.w, path).Delete([]byte(k)); err != nil {
		r.fatalf("delete %q %q: %v", path, k, err)
	}
	delete(r.model[path], k)
}

// freeze pushes a new active layer, as the state machine does when it
// hands a layer to the checkpoint writer.
func (r *lstRun) freeze() {
	r.note("freeze (active layer becomes frozen #%d)", len(r.frozen)+1)
	r.closeW()
	r.frozen = append([]*layer{r.active}, r.frozen...)
	r.active = newLayer(nil)
	r.frozenModel = r.model.clone()
	if r.snap != nil {
		if err := r.snap.base.Rollback(); err != nil {
			r.fatalf("rollback snapshot: %v", err)
		}
	}
	base, err := r.db.Begin(false)
	if err != nil {
		r.fatalf("begin read tx: %v", err)
	}
	r.snap = newStx(base, append([]*layer(nil), r.frozen...), false)
	r.snapModel = r.model.clone()
	r.openW()
}

// checkpoint writes the oldest frozen layer into the file and drops it.
// With keepW the writable stx keeps its (now older) read transaction and
// layer list, which is still a consistent view.
func (r *lstRun) checkpoint(keepW bool) {
	if len(r.frozen) == 0 {
		return
	}
	r.note("checkpoint oldest of %d frozen layers (keep writable stx: %v)", len(r.frozen), keepW)
	if !keepW {
		r.closeW()
	}
	oldest := r.frozen[len(r.frozen)-1]
	if err := r.db.Update(oldest.writeTo); err != nil {
		r.fatalf("checkpoint: %v", err)
	}
	r.frozen = r.frozen[:len(r.frozen)-1]
	if !keepW {
		r.openW()
	}
}

// checkView compares every read path of s with m.
func (r *lstRun) checkView(name string, s *stx, m lstModel, mixedOps int) {
	r.t.Helper()
	for _, path := range lstPaths {
		b := lstBucket(r.t, s, path)
		if b.Tx() != s {
			r.fatalf("%s: bucket %q: Tx() is not its stx", name, path)
		}
		if again := lstBucket(r.t, s, path); again != b {
			r.fatalf("%s: bucket %q: a second lookup returned another bucket", name, path)
		}
		ents := m.entries(path)

		// Get of every key, plus the nested buckets' names (nil, as in bbolt).
		gets := lstKeys
		if path == lstTop {
			gets = append(append([]string(nil), lstKeys...), lstSubs...)
		}
		for _, k := range gets {
			got := b.Get([]byte(k))
			want, ok := m[path][k]
			switch {
			case !ok && got != nil:
				r.fatalf("%s: Get %q %q = %q, want nil (absent)", name, path, k, got)
			case ok && got == nil:
				r.fatalf("%s: Get %q %q = nil, want %q (present)", name, path, k, want)
			case ok && !bytes.Equal(got, want):
				r.fatalf("%s: Get %q %q = %q, want %q", name, path, k, got, want)
			}
		}

		// ForEach.
		i := 0
		err := b.ForEach(func(k, v []byte) error {
			if !lstMatch(ents, i, k, v) {
				return fmt.Errorf("item %d is %s, want %s", i, lstGot(k, v), lstWant(ents, i))
			}
			i++
			return nil
		})
		if err == nil && i != len(ents) {
			err = fmt.Errorf("yielded %d items, want %d (next wanted %s)", i, len(ents), lstWant(ents, i))
		}
		if err != nil {
			r.fatalf("%s: ForEach %q: %v", name, path, err)
		}
		stop := errors.New("stop")
		if err := b.ForEach(func(k, v []byte) error { return stop }); len(ents) > 0 && err != stop {
			r.fatalf("%s: ForEach %q: fn's error not returned: %v", name, path, err)
		}

		// Full forward walk, then Next past the end.
		c := b.Cursor()
		i = 0
		for k, v := c.First(); ; k, v = c.Next() {
			if !lstMatch(ents, i, k, v) {
				r.fatalf("%s: forward walk %q: item %d is %s, want %s", name, path, i, lstGot(k, v), lstWant(ents, i))
			}
			if k == nil {
				break
			}
			i++
		}
		for range 2 {
			if k, v := c.Next(); k != nil || v != nil {
				r.fatalf("%s: %q: Next after the end = %s, want end", name, path, lstGot(k, v))
			}
		}

		// Full backward walk, then Prev past the start.
		c = b.Cursor()
		i = len(ents) - 1
		for k, v := c.Last(); ; k, v = c.Prev() {
			if !lstMatch(ents, i, k, v) {
				r.fatalf("%s: backward walk %q: item %d is %s, want %s", name, path, i, lstGot(k, v), lstWant(ents, i))
			}
			if k == nil {
				break
			}
			i--
		}
		if k, v := c.Prev(); k != nil || v != nil {
			r.fatalf("%s: %q: Prev before the start = %s, want end", name, path, lstGot(k, v))
		}

		// Seek on fresh cursors, then one Prev or Next.
		for range 6 {
			p := r.randProbe()
			c := b.Cursor()
			lb := lstLowerBound(ents, p)
			if k, v := c.Seek([]byte(p)); !lstMatch(ents, lb, k, v) {
				r.fatalf("%s: %q: Seek(%q) on a fresh cursor = %s, want %s", name, path, p, lstGot(k, v), lstWant(ents, lb))
			}
			if r.rng.IntN(2) == 0 {
				want := lb - 1
				if lb == len(ents) {
					want = -1 // the cursor is past the end: no current key
				}
				if k, v := c.Prev(); !lstMatch(ents, want, k, v) {
					r.fatalf("%s: %q: Seek(%q) then Prev = %s, want %s", name, path, p, lstGot(k, v), lstWant(ents, want))
				}
			} else {
				want := lb + 1
				if lb == len(ents) {
					want = -1
				}
				if k, v := c.Next(); !lstMatch(ents, want, k, v) {
					r.fatalf("%s: %q: Seek(%q) then Next = %s, want %s", name, path, p, lstGot(k, v), lstWant(ents, want))
				}
			}
		}

		// One cursor, a random mix of moves.
		r.mixedWalk(name, path, b, ents, mixedOps)
	}
}

// mixedWalk drives one cursor with random First/Last/Seek/Next/Prev and
// checks each result against ents.
func (r *lstRun) mixedWalk(name, path string, b *sbucket, ents []lstEntry, ops int) {
	c := b.Cursor()
	pos := -1 // index in ents of the cursor's key; -1: none
	var trace []string
	for range ops {
		var k, v []byte
		switch n := r.rng.IntN(20); {
		case n < 1:
			trace = append(trace, "First")
			k, v = c.First()
			pos = 0
		case n < 2:
			trace = append(trace, "Last")
			k, v = c.Last()
			pos = len(ents) - 1
		case n < 7:
			p := r.randProbe()
			trace = append(trace, fmt.Sprintf("Seek(%q)", p))
			k, v = c.Seek([]byte(p))
			pos = lstLowerBound(ents, p)
		case n < 14:
			trace = append(trace, "Next")
			k, v = c.Next()
			if pos >= 0 {
				pos++
			}
		default:
			trace = append(trace, "Prev")
			k, v = c.Prev()
			if pos >= 0 {
				pos--
			}
		}
		if pos >= len(ents) {
			pos = -1
		}
		if !lstMatch(ents, pos, k, v) {
			r.fatalf("%s: %q: cursor moves %s returned %s, want %s", name, path,
				strings.Join(trace, ", "), lstGot(k, v), lstWant(ents, pos))
		}
	}
}

// checkRead checks a fresh read-only stx over the file and every layer,
// and that it refuses writes.
func (r *lstRun) checkRead(mixedOps int) {
	tx, err := r.db.Begin(false)
	if err != nil {
		r.fatalf("begin read tx: %v", err)
	}
	defer tx.Rollback()
	s := newStx(tx, r.layers(), false)
	r.checkView("read-only stx", s, r.model, mixedOps)

	path, k := r.randPath(), r.randKey()
	b := lstBucket(r.t, s, path)
	if err := b.Put([]byte(k), []byte("x")); !errors.Is(err, errReadOnly) {
		r.fatalf("read-only Put %q %q: err %v, want errReadOnly", path, k, err)
	}
	if err := b.Delete([]byte(k)); !errors.Is(err, errReadOnly) {
		r.fatalf("read-only Delete %q %q: err %v, want errReadOnly", path, k, err)
	}
	if err := b.Put(nil, []byte("x")); !errors.Is(err, errReadOnly) {
		r.fatalf("read-only Put %q of an empty key: err %v, want errReadOnly", path, err)
	}
	got, want := b.Get([]byte(k)), r.model[path][k]
	if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
		r.fatalf("read-only %q %q after refused writes: Get = %q, want %q", path, k, got, want)
	}
	if s.Bucket([]byte("nope")) != nil || lstBucket(r.t, s, lstTop).Bucket([]byte("nope")) != nil {
		r.fatalf("read-only stx: a missing bucket is not nil")
	}
}

// checkFrozen checks a fresh read-only stx over only the frozen layers
// against the state as of the last freeze.
func (r *lstRun) checkFrozen(mixedOps int) {
	tx, err := r.db.Begin(false)
	if err != nil {
		r.fatalf("begin read tx: %v", err)
	}
	defer tx.Rollback()
	r.checkView("frozen-only stx", newStx(tx, append([]*layer(nil), r.frozen...), false), r.frozenModel, mixedOps)
}

// checkWritableErrors checks the key checks of the writable stx; none of
// them may change anything.
func (r *lstRun) checkWritableErrors() {
	b := lstBucket(r.t, r.w, r.randPath())
	for _, k := range [][]byte{nil, {}} {
		if err := b.Put(k, []byte("x")); !errors.Is(err, errKeyRequired) {
			r.fatalf("writable Put of key %q (nil: %v): err %v, want errKeyRequired", k, k == nil, err)
		}
		if err := b.Delete(k); err != nil { // a no-op, as in bbolt
			r.fatalf("writable Delete of key %q (nil: %v): err %v, want nil", k, k == nil, err)
		}
	}
	big := bytes.Repeat([]byte{'a'}, maxKeySize+1)
	if err := b.Put(big, []byte("x")); !errors.Is(err, errKeyTooLarge) {
		r.fatalf("writable Put of a %d-byte key: err %v, want errKeyTooLarge", len(big), err)
	}
	if err := b.Delete(big); err != nil { // a no-op, as in bbolt
		r.fatalf("writable Delete of a %d-byte key: err %v, want nil", len(big), err)
	}
}

// writeDuringWalk walks a cursor of the writable stx while writing to the
// same bucket between moves, as apply code does (delete the key just
// read, insert keys ahead of or behind the cursor), checking each move
// against the model as it is at that moment.
func (r *lstRun) writeDuringWalk() {
	path := r.randPath()
	b := lstBucket(r.t, r.w, path)
	c := b.Cursor()
	var k, v []byte
	var start string
	if r.rng.IntN(2) == 0 {
		start = "First"
		k, v = c.First()
		if ents := r.model.entries(path); !lstMatch(ents, 0, k, v) {
			r.fatalf("walk with writes %q: First = %s, want %s", path, lstGot(k, v), lstWant(ents, 0))
		}
	} else {
		p := r.randProbe()
		start = fmt.Sprintf("Seek(%q)", p)
		k, v = c.Seek([]byte(p))
		if ents := r.model.entries(path); !lstMatch(ents, lstLowerBound(ents, p), k, v) {
			r.fatalf("walk with writes %q: %s = %s, want %s", path, start, lstGot(k, v), lstWant(ents, lstLowerBound(ents, p)))
		}
	}
	r.note("walk with writes on %q from %s", path, start)
	isSub := func(k string) bool {
		return path == lstTop && (k == lstSubs[0] || k == lstSubs[1])
	}
	for moves := 0; k != nil && moves < 40; moves++ {
		cur := string(k) // the cursor's key (k may be invalid once written over)
		switch n := r.rng.IntN(12); {
		case n < 4:
			if !isSub(cur) {
				r.del(path, cur)
			}
		case n < 6: // a key ahead of the cursor
			if nk := r.randKey(); nk > cur {
				r.put(path, nk, r.randValue())
			}
		case n < 7: // a key behind it
			if nk := r.randKey(); nk < cur {
				r.put(path, nk, r.randValue())
			}
		case n < 8: // delete a key ahead
			keys := r.modelKeys(path)
			if i := sort.SearchStrings(keys, cur); i < len(keys) {
				j := i + r.rng.IntN(len(keys)-i)
				if keys[j] > cur {
					r.del(path, keys[j])
				}
			}
		case n < 9: // overwrite the current key
			if !isSub(cur) {
				r.put(path, cur, r.randValue())
			}
		}
		ents := r.model.entries(path)
		var want int
		var move string
		if r.rng.IntN(5) == 0 {
			move = "Prev"
			k, v = c.Prev()
			want = lstLowerBound(ents, cur) - 1
		} else {
			move = "Next"
			k, v = c.Next()
			want = lstUpperBound(ents, cur)
		}
		if !lstMatch(ents, want, k, v) {
			r.fatalf("walk with writes %q: %s at %q = %s, want %s", path, move, cur, lstGot(k, v), lstWant(ents, want))
		}
	}
}

// checkFile checks the raw bbolt content against the model.
func (r *lstRun) checkFile() {
	err := r.db.View(func(tx *bolt.Tx) error {
		for _, path := range lstPaths {
			bb := boltBucket(tx, path)
			if bb == nil {
				return fmt.Errorf("bucket %q missing from the file", path)
			}
			ents := r.model.entries(path)
			i := 0
			if err := bb.ForEach(func(k, v []byte) error {
				if !lstMatch(ents, i, k, v) {
					return fmt.Errorf("bucket %q: file item %d is %s, want %s", path, i, lstGot(k, v), lstWant(ents, i))
				}
				i++
				return nil
			}); err != nil {
				return err
			}
			if i != len(ents) {
				return fmt.Errorf("bucket %q: file has %d items, want %d (next wanted %s)", path, i, len(ents), lstWant(ents, i))
			}
		}
		return nil
	})
	if err != nil {
		r.fatalf("file content: %v", err)
	}
}

func lstRunSeed(t *testing.T, seed uint64, steps int) {
	r := &lstRun{
		t:       t,
		seed:    seed,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		db:      lstOpenDB(t),
		model:   newLstModel(),
		active:  newLayer(nil),
		putBias: 60,
	}
	// On failure, end the read transactions still open so the file can
	// close (cleanups run newest first: before lstOpenDB's Close).
	t.Cleanup(func() {
		if r.w != nil {
			r.w.base.Rollback()
		}
		if r.snap != nil {
			r.snap.base.Rollback()
		}
	})
	// Start with some keys already in the file.
	err := r.db.Update(func(tx *bolt.Tx) error {
		for _, path := range lstPaths {
			bb := boltBucket(tx, path)
			for range 25 {
				k, v := r.randKey(), r.randValue()
				if v == nil {
					v = []byte{}
				}
				if err := bb.Put([]byte(k), v); err != nil {
					return err
				}
				r.model[path][k] = v
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed %d: fill file: %v", seed, err)
	}
	r.frozenModel = r.model.clone()
	r.openW()
	r.checkRead(40)
	r.checkView("writable stx", r.w, r.model, 40)

	for r.step = 1; r.step <= steps; r.step++ {
		// Alternate put-heavy and delete-heavy phases so buckets both
		// fill up and drain (long runs of deletions to skip).
		if r.step%400 == 0 {
			r.putBias = []int{85, 25, 60, 10}[(r.step/400)%4]
			r.note("put bias %d%%", r.putBias)
		}
		switch n := r.rng.IntN(100); {
		case n < 62:
			path := r.randPath()
			if r.rng.IntN(100) < r.putBias {
				r.put(path, r.randKey(), r.randValue())
			} else if keys := r.modelKeys(path); len(keys) > 0 && r.rng.IntN(2) == 0 {
				r.del(path, keys[r.rng.IntN(len(keys))])
			} else {
				r.del(path, r.randKey())
			}
		case n < 68:
			r.freeze()
			if len(r.frozen) > 6 {
				r.checkpoint(false)
			}
		case n < 73:
			r.checkpoint(r.rng.IntN(2) == 0)
			r.checkRead(10)
		case n < 76:
			r.checkRead(40)
		case n < 79:
			r.checkView("writable stx", r.w, r.model, 40)
		case n < 81:
			if r.snap != nil {
				r.checkView("snapshot stx held since the last freeze", r.snap, r.snapModel, 20)
			}
		case n < 83:
			r.checkFrozen(20)
		case n < 88:
			r.writeDuringWalk()
		case n < 89:
			r.checkWritableErrors()
		default:
			// A spot check of one key and one Seek through the writable stx.
			path, k := r.randPath(), r.randKey()
			b := lstBucket(r.t, r.w, path)
			got, want := b.Get([]byte(k)), r.model[path][k]
			if (got == nil) != (want == nil) || !bytes.Equal(got, want) {
				r.fatalf("writable stx: Get %q %q = %q (nil: %v), want %q (nil: %v)", path, k, got, got == nil, want, want == nil)
			}
			p := r.randProbe()
			ents := r.model.entries(path)
			if gk, gv := b.Cursor().Seek([]byte(p)); !lstMatch(ents, lstLowerBound(ents, p), gk, gv) {
				r.fatalf("writable stx: Seek %q %q = %s, want %s", path, p, lstGot(gk, gv), lstWant(ents, lstLowerBound(ents, p)))
			}
		}
	}

	// Checkpoint everything; the file alone must then be the model.
	r.step = steps + 1
	r.checkRead(40)
	r.freeze()
	for len(r.frozen) > 0 {
		r.checkpoint(false)
	}
	r.checkFile()
	r.checkRead(40)
	r.checkView("writable stx", r.w, r.model, 40)
	r.closeW()
	if err := r.snap.base.Rollback(); err != nil {
		t.Fatalf("seed %d: rollback snapshot: %v", seed, err)
	}
	r.snap = nil
}

// lstBegin starts a read transaction ended at the test's cleanup at the
// latest (before the file is closed).
func lstBegin(t *testing.T, db *bolt.DB) *bolt.Tx {
	t.Helper()
	tx, err := db.Begin(false)
	if err != nil {
		t.Fatalf("begin read tx: %v", err)
	}
	t.Cleanup(func() { tx.Rollback() })
	return tx
}

func TestLayeredStoreMatchesModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5}
	steps := 2500
	if testing.Short() {
		seeds, steps = seeds[:2], 1000
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { lstRunSeed(t, seed, steps) })
	}
}

// TestLayeredStoreWriteDuringWalk pins the cursor-and-write patterns the
// apply code relies on, with keys spread over the file and two layers.
func TestLayeredStoreWriteDuringWalk(t *testing.T) {
	db := lstOpenDB(t)
	err := db.Update(func(tx *bolt.Tx) error {
		b := boltBucket(tx, "aux")
		for _, k := range []string{"a", "c", "e", "g"} {
			if err := b.Put([]byte(k), []byte("file-"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	frozen := newLayer(nil)
	base := lstBegin(t, db)
	w := newStx(base, []*layer{frozen}, true)
	b := w.Bucket([]byte("aux"))
	for _, k := range []string{"b", "d"} {
		if err := b.Put([]byte(k), []byte("frozen-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete([]byte("e")); err != nil {
		t.Fatal(err)
	}
	base.Rollback()

	active := newLayer(nil)
	base = lstBegin(t, db)
	w = newStx(base, []*layer{active, frozen}, true)
	b = w.Bucket([]byte("aux"))
	// Live keys: a c g (file), b d (frozen); e deleted in the frozen layer.

	expect := func(what string, k, v []byte, wantK, wantV string) {
		t.Helper()
		if wantK == "" {
			if k != nil || v != nil {
				t.Fatalf("%s = %s, want end", what, lstGot(k, v))
			}
			return
		}
		if string(k) != wantK || string(v) != wantV {
			t.Fatalf("%s = %s, want (%q, %q)", what, lstGot(k, v), wantK, wantV)
		}
	}

	// Delete each key as it is read: the walk must still see every key.
	c := b.Cursor()
	var seen []string
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		seen = append(seen, string(k))
		if err := b.Delete(bytes.Clone(k)); err != nil {
			t.Fatal(err)
		}
		if string(k) == "b" {
			// A key ahead of the cursor, in a gap of the file and the
			// frozen layer, and one behind it.
			if err := b.Put([]byte("cc"), []byte("active-cc")); err != nil {
				t.Fatal(err)
			}
			if err := b.Put([]byte("0"), []byte("active-0")); err != nil {
				t.Fatal(err)
			}
		}
		if string(k) == "d" {
			// Delete a file key ahead and revive the frozen layer's deletion.
			if err := b.Delete([]byte("g")); err != nil {
				t.Fatal(err)
			}
			if err := b.Put([]byte("e"), []byte("active-e")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := strings.Join(seen, " "), "a b c cc d e"; got != want {
		t.Fatalf("walk with deletions saw %q, want %q", got, want)
	}
	k, v := c.Next()
	expect("Next after the end", k, v, "", "")

	// Only "0" is left (put behind the cursor).
	k, v = c.First()
	expect("First after the walk", k, v, "0", "active-0")
	k, v = c.Next()
	expect("Next after \"0\"", k, v, "", "")
	k, v = c.Last()
	expect("Last after the walk", k, v, "0", "active-0")
	k, v = c.Seek([]byte("a"))
	expect("Seek(\"a\") after the walk", k, v, "", "")

	// Put a key ahead of the cursor, then continue.
	k, v = c.Seek([]byte("0"))
	expect("Seek(\"0\")", k, v, "0", "active-0")
	if err := b.Put([]byte("z"), []byte("active-z")); err != nil {
		t.Fatal(err)
	}
	k, v = c.Next()
	expect("Next after putting \"z\"", k, v, "z", "active-z")
	k, v = c.Prev()
	expect("Prev from \"z\"", k, v, "0", "active-0")
}

// TestLayeredStoreErrors covers the store's refusals and checkpoint
// errors outside the random run.
func TestLayeredStoreErrors(t *testing.T) {
	db := lstOpenDB(t)
	base := lstBegin(t, db)
	l := newLayer(nil)

	ro := newStx(base, []*layer{l}, false)
	rb := ro.Bucket([]byte("aux"))
	if err := rb.Put([]byte("k"), []byte("v")); !errors.Is(err, errReadOnly) {
		t.Fatalf("read-only Put: err %v, want errReadOnly", err)
	}
	if err := rb.Delete([]byte("k")); !errors.Is(err, errReadOnly) {
		t.Fatalf("read-only Delete: err %v, want errReadOnly", err)
	}
	if len(l.buckets) != 0 {
		t.Fatalf("refused read-only writes left %d bucket trees in the layer", len(l.buckets))
	}

	w := newStx(base, []*layer{l}, true)
	wb := w.Bucket([]byte("top")).Bucket([]byte(lstSubs[0]))
	if err := wb.Put(nil, []byte("v")); !errors.Is(err, errKeyRequired) {
		t.Fatalf("Put of a nil key: err %v, want errKeyRequired", err)
	}
	if err := wb.Put([]byte{}, []byte("v")); !errors.Is(err, errKeyRequired) {
		t.Fatalf("Put of an empty key: err %v, want errKeyRequired", err)
	}
	if err := wb.Delete([]byte{}); err != nil {
		t.Fatalf("Delete of an empty key: err %v, want nil (a no-op, as in bbolt)", err)
	}
	if err := wb.Put(make([]byte, maxKeySize+1), []byte("v")); !errors.Is(err, errKeyTooLarge) {
		t.Fatalf("Put of a too large key: err %v, want errKeyTooLarge", err)
	}
	if len(l.buckets) != 0 {
		t.Fatalf("refused writes left %d bucket trees in the layer", len(l.buckets))
	}
	if w.Bucket([]byte("nope")) != nil || w.Bucket([]byte("top")).Bucket([]byte("nope")) != nil {
		t.Fatal("a missing bucket is not nil")
	}

	// The largest key bbolt takes is accepted and checkpoints; a nil
	// value is stored as an empty one.
	big := bytes.Repeat([]byte{'k'}, maxKeySize)
	if err := wb.Put(big, nil); err != nil {
		t.Fatalf("Put of a %d-byte key: %v", len(big), err)
	}
	if got := wb.Get(big); got == nil || len(got) != 0 {
		t.Fatalf("Get after Put(k, nil) = %q (nil: %v), want empty non-nil", got, got == nil)
	}
	if err := db.Update(l.writeTo); err != nil {
		t.Fatalf("checkpoint of a %d-byte key: %v", len(big), err)
	}
	err := db.View(func(tx *bolt.Tx) error {
		if got := boltBucket(tx, "top/"+lstSubs[0]).Get(big); got == nil || len(got) != 0 {
			return fmt.Errorf("file value of the big key = %q (nil: %v), want empty non-nil", got, got == nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A layer holding a bucket the file lacks fails its checkpoint.
	bad := newLayer(nil)
	bad.tree("nope/sub", true).put(kv{k: []byte("k"), v: []byte("v")})
	if err := db.Update(bad.writeTo); err == nil {
		t.Fatal("checkpoint of a layer with an unknown bucket succeeded")
	}
}

// TestLayeredStoreCursorSeekBack: Seek moves to the first key at or after
// its bound wherever the cursor is, as a bbolt cursor's does; in
// particular to a key the cursor has already stepped past, and after it
// has run off the end.
func TestLayeredStoreCursorSeekBack(t *testing.T) {
	db := lstOpenDB(t)
	err := db.Update(func(tx *bolt.Tx) error {
		b := boltBucket(tx, "aux")
		for _, k := range []string{"a", "b", "c"} {
			if err := b.Put([]byte(k), []byte("file-"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l := newLayer(nil)
	l.tree("aux", true).put(kv{k: []byte("bb"), v: []byte("layer-bb")})
	for _, layers := range [][]*layer{nil, {l}} {
		s := newStx(lstBegin(t, db), layers, false)
		seek := func(c *scursor, moves string, bound, want string) {
			t.Helper()
			k, _ := c.Seek([]byte(bound))
			if string(k) != want {
				t.Fatalf("%d layers: after %s, Seek(%q) = %q, want %q", len(layers), moves, bound, k, want)
			}
		}
		c := s.Bucket([]byte("aux")).Cursor()
		c.Seek([]byte("c"))
		seek(c, `Seek("c")`, "a", "a")

		c = s.Bucket([]byte("aux")).Cursor()
		c.First()
		c.Next()
		seek(c, "First, Next", "a", "a")

		c = s.Bucket([]byte("aux")).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
		}
		seek(c, "a walk off the end", "b", "b")
	}
}
