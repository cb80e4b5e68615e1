package fsm

import (
	"bytes"
	"errors"
	"hash/maphash"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// The state machine applies into memory and checkpoints to bbolt in the
// background (see DESIGN.md, "Applying into memory"). A layer holds the
// changes of a run of applied entries that are not yet in the state file;
// an stx reads through the layers, newest first, down to a bbolt read
// transaction, and writes into the newest layer. The bucket set is fixed
// (ensureBuckets), so layers only ever hold keys of existing buckets.

// Errors of the layered store (programming errors: Apply panics on them).
var (
	errReadOnly    = errors.New("fsm: write in a read-only state transaction")
	errKeyRequired = errors.New("fsm: empty key")
	errKeyTooLarge = errors.New("fsm: key too large")
)

// maxKeySize is bbolt's limit, kept so a layer never accepts a key its
// checkpoint could not write.
const maxKeySize = 32768

// kv is one key's newest change in a layer: a value or a deletion.
type kv struct {
	k, v []byte
	del  bool
}

// ltree is one bucket's changes in a layer: a hash index for point reads
// and writes, and the keys in order for cursors and checkpoints, kept as
// two sorted runs of positions in ents. Keys that arrive in increasing
// order (sequence numbers, times) extend main as they come; the others are
// placed into tail, a short run, by the next ordered read, and tail is
// merged into main whenever it outgrows tailMax, so no read ever sorts or
// copies the whole layer for one new key. A frozen layer is never written
// again, but its late keys may still be placed by whichever of the apply
// loop and the checkpoint writer reads first, hence mu.
type ltree struct {
	// idx maps a key's hash to the position of the first key with that
	// hash; coll holds the keys whose hash an earlier key already had (so
	// far never seen, but possible). Hashes rather than the keys
	// themselves: a uint64-keyed map has smaller slots and no pointers
	// for the collector to scan, and a lookup of a key the layer does not
	// hold (new orders, client IDs, records loaded from the file) touches
	// no key bytes.
	idx  map[uint64]int32
	coll map[string]int32
	ents []kv       // in arrival order
	mu   sync.Mutex // guards main, tail and placed
	main []int32    // positions in key order
	tail []int32    // positions in key order, merged into main past tailMax
	// placed counts the ents already in main or tail; the rest are late.
	placed int
}

// tailMax bounds the short run: placing a late key costs a search and a
// copy of at most this many positions, and merging the runs (a pass over
// the layer) happens at most once per tailMax late keys.
const tailMax = 1024

// keySeed seeds the layer indexes' key hashes (per process: the hashes
// never leave memory, so replicas need not agree on them).
var keySeed = maphash.MakeSeed()

// newLtree sizes the changes for keys keys.
func newLtree(keys int) *ltree {
	return &ltree{idx: make(map[uint64]int32, keys), ents: make([]kv, 0, keys)}
}

// find returns the position of the key's change in this layer.
func (t *ltree) find(k []byte, h uint64) (int32, bool) {
	i, ok := t.idx[h]
	if ok && bytes.Equal(t.ents[i].k, k) {
		return i, true
	}
	if ok && t.coll != nil { // another key has this hash
		if i, ok = t.coll[string(k)]; ok {
			return i, true
		}
	}
	return 0, false // no key with this hash: not here
}

func keyHash(k []byte) uint64 { return maphash.Bytes(keySeed, k) }

// get returns the key's change in this layer, if it has one.
func (t *ltree) get(k []byte) (kv, bool) {
	if i, ok := t.find(k, keyHash(k)); ok {
		return t.ents[i], true
	}
	return kv{}, false
}

// put records a change (only on the active layer).
func (t *ltree) put(it kv) { t.putHashed(it, keyHash(it.k)) }

// putHashed is put with the key's hash given (tests give colliding ones).
func (t *ltree) putHashed(it kv, h uint64) {
	if i, ok := t.find(it.k, h); ok {
		t.ents[i].v, t.ents[i].del = it.v, it.del
		return
	}
	i := t.appendEnt(it)
	if _, taken := t.idx[h]; !taken {
		t.idx[h] = i
	} else {
		if t.coll == nil {
			t.coll = map[string]int32{}
		}
		// The key's bytes belong to the layer from here on and never
		// change (Put's contract, as bbolt's), so the index shares them.
		t.coll[unsafe.String(unsafe.SliceData(it.k), len(it.k))] = i
	}
}

// appendEnt adds a new key's change, extending the main run when the key
// sorts after every key placed so far.
func (t *ltree) appendEnt(it kv) int32 {
	i := int32(len(t.ents))
	t.ents = append(t.ents, it)
	if t.placed == int(i) && (len(t.main) == 0 || bytes.Compare(it.k, t.ents[t.main[len(t.main)-1]].k) > 0) {
		t.main = append(t.main, i)
		t.placed++
	}
	return i
}

func (t *ltree) less(a, b int32) int { return bytes.Compare(t.ents[a].k, t.ents[b].k) }

// runs places the late keys and returns the two sorted runs.
func (t *ltree) runs() (main, tail []int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ; t.placed < len(t.ents); t.placed++ {
		p := int32(t.placed)
		j, _ := slices.BinarySearchFunc(t.tail, p, t.less)
		t.tail = slices.Insert(t.tail, j, p)
	}
	if len(t.tail) > tailMax {
		t.main, t.tail = t.merge(t.main, t.tail), nil
	}
	return t.main, t.tail
}

// merge returns the union of two sorted runs, in order.
func (t *ltree) merge(a, b []int32) []int32 {
	out := make([]int32, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if t.less(a[0], b[0]) < 0 {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// ge is the first change at or after from (after it if strict; from nil:
// the first).
func (t *ltree) ge(from []byte, strict bool) (kv, bool) {
	main, tail := t.runs()
	first := func(run []int32) (int32, bool) {
		i := sort.Search(len(run), func(i int) bool {
			c := bytes.Compare(t.ents[run[i]].k, from)
			return c > 0 || (c == 0 && !strict)
		})
		if i == len(run) {
			return 0, false
		}
		return run[i], true
	}
	a, aok := first(main)
	b, bok := first(tail)
	return t.pick(a, aok, b, bok, false)
}

// lt is the last change before from (from nil: the last).
func (t *ltree) lt(from []byte) (kv, bool) {
	main, tail := t.runs()
	last := func(run []int32) (int32, bool) {
		i := len(run)
		if from != nil {
			i = sort.Search(len(run), func(i int) bool { return bytes.Compare(t.ents[run[i]].k, from) >= 0 })
		}
		if i == 0 {
			return 0, false
		}
		return run[i-1], true
	}
	a, aok := last(main)
	b, bok := last(tail)
	return t.pick(a, aok, b, bok, true)
}

// pick returns the nearer of the two runs' candidates: the smaller key
// going forward, the larger going back.
func (t *ltree) pick(a int32, aok bool, b int32, bok bool, back bool) (kv, bool) {
	if aok && bok {
		if c := t.less(a, b); (c < 0) == back {
			a = b
		}
		return t.ents[a], true
	}
	switch {
	case aok:
		return t.ents[a], true
	case bok:
		return t.ents[b], true
	}
	return kv{}, false
}

// layer is a run of applied entries' changes, by bucket path ("top" or
// "top/sub"). Once frozen it is never changed again: the checkpoint writer
// and readers share it (ltree.mu covers completing a key order).
type layer struct {
	buckets map[string]*ltree
	index   uint64 // last applied log index whose changes it holds
	cmds    int
	since   time.Time
	// sizes are the previous layer's key counts per bucket, to size this
	// one's indexes up front instead of growing them key by key.
	sizes map[string]treeSize
	// snaps are snapshots waiting for a read transaction taken right after
	// this layer is committed (and before any newer one is).
	snaps []*snapshot
}

// newLayer starts a layer whose bucket indexes are sized by sizes (the
// key counts of the layer before it; nil: none).
func newLayer(sizes map[string]treeSize) *layer {
	return &layer{buckets: map[string]*ltree{}, since: time.Now(), sizes: sizes}
}

// treeSize is how many keys a bucket's changes hold.
type treeSize struct{ keys int }

// keyCounts is the size of each bucket's changes in the layer.
func (l *layer) keyCounts() map[string]treeSize {
	out := make(map[string]treeSize, len(l.buckets))
	for p, t := range l.buckets {
		out[p] = treeSize{len(t.ents)}
	}
	return out
}

// tree returns the layer's changes for a bucket path, creating them if
// asked.
func (l *layer) tree(path string, create bool) *ltree {
	t := l.buckets[path]
	if t == nil && create {
		sz := l.sizes[path]
		t = newLtree(sz.keys)
		l.buckets[path] = t
	}
	return t
}

// writeTo applies the layer to a bbolt write transaction, bucket by
// bucket in order.
func (l *layer) writeTo(tx *bolt.Tx) error {
	paths := make([]string, 0, len(l.buckets))
	for p := range l.buckets {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		b := boltBucket(tx, p)
		if b == nil {
			return errors.New("fsm: checkpoint of unknown bucket " + p)
		}
		// In arrival order: bbolt takes keys in any order, and sorting
		// them here would cost more than the locality it buys (most keys
		// extend one of a few per-account or per-symbol ranges anyway).
		for _, it := range l.buckets[p].ents {
			var err error
			if it.del {
				err = b.Delete(it.k)
			} else {
				err = b.Put(it.k, it.v)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// boltBucket resolves a bucket path in a bbolt transaction.
func boltBucket(tx *bolt.Tx, path string) *bolt.Bucket {
	top, sub, nested := strings.Cut(path, "/")
	b := tx.Bucket([]byte(top))
	if b == nil || !nested {
		return b
	}
	return b.Bucket([]byte(sub))
}

// stx is a state transaction: layers (newest first) over a bbolt read
// transaction. Only ApplyBatch has a writable one; it writes into
// layers[0].
type stx struct {
	base     *bolt.Tx
	layers   []*layer
	writable bool
	tops     map[string]*sbucket
}

func newStx(base *bolt.Tx, layers []*layer, writable bool) *stx {
	return &stx{base: base, layers: layers, writable: writable, tops: map[string]*sbucket{}}
}

// Bucket returns a top-level bucket, or nil if the state has none by that
// name.
func (t *stx) Bucket(name []byte) *sbucket {
	if b, ok := t.tops[string(name)]; ok {
		return b
	}
	bb := t.base.Bucket(name)
	if bb == nil {
		return nil
	}
	b := t.newBucket(string(name), bb)
	t.tops[b.path] = b
	return b
}

func (t *stx) newBucket(path string, bb *bolt.Bucket) *sbucket {
	b := &sbucket{t: t, path: path, bb: bb, trees: make([]*ltree, len(t.layers))}
	for i, l := range t.layers {
		b.trees[i] = l.tree(path, false)
	}
	return b
}

// sbucket is a bucket seen through an stx. trees[i] is layers[i]'s tree
// for this bucket (nil while that layer has none).
type sbucket struct {
	t     *stx
	path  string
	bb    *bolt.Bucket
	trees []*ltree
	subs  map[string]*sbucket
}

// Tx returns the transaction the bucket belongs to.
func (b *sbucket) Tx() *stx { return b.t }

// Bucket returns a nested bucket, or nil.
func (b *sbucket) Bucket(name []byte) *sbucket {
	if s, ok := b.subs[string(name)]; ok {
		return s
	}
	bb := b.bb.Bucket(name)
	if bb == nil {
		return nil
	}
	if b.subs == nil {
		b.subs = map[string]*sbucket{}
	}
	s := b.t.newBucket(b.path+"/"+string(name), bb)
	b.subs[string(name)] = s
	return s
}

// Get returns a key's value, or nil if it has none. The slice must not be
// changed and is valid for the life of the transaction.
func (b *sbucket) Get(k []byte) []byte {
	v, _ := b.getOwn(k)
	return v
}

// getOwn is Get that also reports whether the value is the active
// layer's (a value this transaction's apply loop put, which only it may
// extend in place: appendLog).
func (b *sbucket) getOwn(k []byte) (v []byte, own bool) {
	for i, tr := range b.trees {
		if tr == nil {
			continue
		}
		if it, ok := tr.get(k); ok {
			if it.del {
				return nil, false
			}
			return it.v, i == 0 && b.t.writable
		}
	}
	return b.bb.Get(k), false
}

// Put sets a key. As with bbolt, k and v must not change afterwards.
func (b *sbucket) Put(k, v []byte) error { return b.put(k, v, (*ltree).put) }

func (b *sbucket) put(k, v []byte, into func(*ltree, kv)) error {
	if err := b.writable(k); err != nil {
		return err
	}
	if v == nil {
		v = []byte{}
	}
	into(b.top(), kv{k: k, v: v})
	return nil
}

// Delete removes a key (a no-op if it has none, including keys no bucket
// could hold: empty or too large, as in bbolt).
func (b *sbucket) Delete(k []byte) error {
	if !b.t.writable {
		return errReadOnly
	}
	if len(k) == 0 || len(k) > maxKeySize {
		return nil
	}
	b.top().put(kv{k: k, del: true})
	return nil
}

func (b *sbucket) writable(k []byte) error {
	switch {
	case !b.t.writable:
		return errReadOnly
	case len(k) == 0:
		return errKeyRequired
	case len(k) > maxKeySize:
		return errKeyTooLarge
	}
	return nil
}

// top returns the writable layer's tree for this bucket.
func (b *sbucket) top() *ltree {
	if b.trees[0] == nil {
		b.trees[0] = b.t.layers[0].tree(b.path, true)
	}
	return b.trees[0]
}

// ForEach calls fn for every key in order; fn must not write to b.
func (b *sbucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Cursor returns a cursor over the merged keys of the layers and the file.
func (b *sbucket) Cursor() *scursor { return &scursor{b: b, bc: b.bb.Cursor()} }

// scursor walks the merged view: at each step it takes the nearest key in
// any source, the newest layer winning ties, and skips deletions. Layer
// trees are searched afresh at every step (so writes between steps are
// seen); the bbolt cursor is only re-positioned when forward iteration
// cannot simply step it.
type scursor struct {
	b   *sbucket
	bc  *bolt.Cursor
	key []byte // the key last returned; nil when none

	// Forward state of bc: when fwd is set, bk/bv is the smallest file
	// key at or after the last forward search's bound (bk nil: none).
	fwd    bool
	bk, bv []byte
}

// First moves to the first key.
func (c *scursor) First() ([]byte, []byte) { return c.ge(nil, false) }

// Seek moves to the first key at or after k.
func (c *scursor) Seek(k []byte) ([]byte, []byte) {
	if c.key == nil || bytes.Compare(k, c.key) < 0 {
		c.fwd = false // a bound behind the last one: the file cursor must move back
	}
	return c.ge(k, false)
}

// Next moves to the key after the current one.
func (c *scursor) Next() ([]byte, []byte) {
	if c.key == nil {
		return nil, nil
	}
	return c.ge(c.key, true)
}

// Last moves to the last key.
func (c *scursor) Last() ([]byte, []byte) { return c.lt(nil) }

// Prev moves to the key before the current one.
func (c *scursor) Prev() ([]byte, []byte) {
	if c.key == nil {
		return nil, nil
	}
	return c.lt(c.key)
}

// ge finds the smallest live key at or after from (after it if strict;
// from nil: the first key).
func (c *scursor) ge(from []byte, strict bool) ([]byte, []byte) {
	return c.find(from, strict, false)
}

// lt finds the largest live key before from (from nil: the last key).
func (c *scursor) lt(from []byte) ([]byte, []byte) { return c.find(from, true, true) }

// find is ge (back false) or lt (back true): the nearest key in any
// source in that direction, the newest layer winning ties, stepping over
// deletions.
func (c *scursor) find(from []byte, strict, back bool) ([]byte, []byte) {
	nearer := func(k, than []byte) bool {
		if back {
			return bytes.Compare(k, than) > 0
		}
		return bytes.Compare(k, than) < 0
	}
	for {
		var best kv
		found := false
		for _, tr := range c.b.trees {
			if tr == nil {
				continue
			}
			var hit kv
			var ok bool
			if back {
				hit, ok = tr.lt(from)
			} else {
				hit, ok = tr.ge(from, strict)
			}
			if ok && (!found || nearer(hit.k, best.k)) {
				best, found = hit, true
			}
		}
		var k, v []byte
		if back {
			k, v = c.baseLT(from)
		} else {
			k, v = c.baseGE(from, strict)
		}
		if k != nil && (!found || nearer(k, best.k)) {
			best, found = kv{k: k, v: v}, true
		}
		if !found {
			c.key = nil
			return nil, nil
		}
		if !best.del {
			c.key = best.k
			return best.k, best.v
		}
		from, strict = best.k, true
	}
}

// baseGE is the smallest file key at or after from (after it if strict).
// Forward iteration only ever asks for bounds at or past the last one, so
// the cursor's position is reused whenever it still answers.
func (c *scursor) baseGE(from []byte, strict bool) ([]byte, []byte) {
	if c.fwd && from != nil {
		switch cmp := bytesCompareNil(c.bk, from); {
		case c.bk == nil || cmp > 0:
			return c.bk, c.bv
		case cmp == 0 && !strict:
			return c.bk, c.bv
		case cmp == 0 && strict:
			c.bk, c.bv = c.bc.Next()
			return c.bk, c.bv
		}
	}
	if from == nil {
		c.bk, c.bv = c.bc.First()
	} else {
		c.bk, c.bv = c.bc.Seek(from)
		if strict && c.bk != nil && bytes.Equal(c.bk, from) {
			c.bk, c.bv = c.bc.Next()
		}
	}
	c.fwd = true
	return c.bk, c.bv
}

// bytesCompareNil compares a with b, where a nil a (an exhausted cursor)
// sorts after everything.
func bytesCompareNil(a, b []byte) int {
	if a == nil {
		return 1
	}
	return bytes.Compare(a, b)
}

// baseLT is the largest file key before from (from nil: the last).
func (c *scursor) baseLT(from []byte) ([]byte, []byte) {
	c.fwd = false // the file cursor no longer sits where baseGE left it
	if from == nil {
		return c.bc.Last()
	}
	if k, _ := c.bc.Seek(from); k == nil {
		return c.bc.Last()
	}
	return c.bc.Prev()
}
