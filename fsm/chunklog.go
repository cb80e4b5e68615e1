package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Append-only logs (statements, order events, the tape) are stored in
// chunks: one key per logChunk consecutive sequence numbers of one owner
// (an account, or a symbol), whose value is the chunk's records in order.
// A checkpoint then writes one key per owner per chunk touched instead of
// one per record (see DESIGN.md, "Chunked logs").
//
// Key: the owner's prefix (account, or symbol and a zero byte), then the
// first sequence number the chunk can hold (seq &^ (logChunk-1)),
// big-endian. Value: per record, uvarint(seq - chunk start),
// uvarint(length), the record's bytes; sequence numbers increase.
const logChunk = 32

// chunkStart is the first sequence number of seq's chunk.
func chunkStart(seq uint64) uint64 { return seq &^ (logChunk - 1) }

// appendLog adds a record with sequence seq to the chunk stored under key
// (built by the caller from the owner's prefix and chunkStart(seq)). seq
// must be above every sequence number the owner's log holds. A chunk the
// active layer already holds is extended in place: only this apply loop
// writes it, and bytes past a slice's length are never read through it, so
// a reader holding the shorter value is unaffected. A chunk from an older
// layer or from the file is copied first.
func appendLog(b *sbucket, key []byte, seq uint64, rec []byte) {
	old, own := b.getOwn(key)
	v := old
	if !own {
		// Room for the rest of the chunk at this record's size: the
		// chunk is extended in place record by record from here on,
		// instead of growing (and copying) five times on the way to 32.
		left := logChunk - int(seq-chunkStart(seq))
		v = make([]byte, len(old), len(old)+left*(len(rec)+2*binary.MaxVarintLen16))
		copy(v, old)
	}
	v = binary.AppendUvarint(v, seq-chunkStart(seq))
	v = binary.AppendUvarint(v, uint64(len(rec)))
	v = append(v, rec...)
	must(b.Put(key, v))
}

// appendLogWith is appendLog of v's encoding.
func appendLogWith[T any](b *sbucket, key []byte, seq uint64, v T, enc func(*writer, T)) {
	withEncoding(v, enc, func(rec []byte) { appendLog(b, key, seq, rec) })
}

// chunkRecords calls fn for each record of the chunk stored under the key
// ending in start, in order, until fn returns false; it reports whether fn
// always returned true. A chunk that does not parse is corrupt state.
func chunkRecords(start uint64, v []byte, fn func(seq uint64, rec []byte) bool) bool {
	for len(v) > 0 {
		off, n := binary.Uvarint(v)
		if n <= 0 {
			panic(fmt.Sprintf("fsm: stored log chunk %d: %v: bad sequence offset", start, ErrCorrupt))
		}
		v = v[n:]
		l, n := binary.Uvarint(v)
		if n <= 0 || l > uint64(len(v)-n) {
			panic(fmt.Sprintf("fsm: stored log chunk %d: %v: bad record length", start, ErrCorrupt))
		}
		rec := v[n : n+int(l) : n+int(l)] // an append to rec cannot reach the next record
		v = v[n+int(l):]
		if !fn(start+off, rec) {
			return false
		}
	}
	return true
}

// isChunkKey reports whether k is a chunk key of the owner with prefix.
func isChunkKey(k, prefix []byte) bool {
	return len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix)
}

// scanLog calls fn for the owner's records with sequence numbers from
// `from` on, oldest first, until fn returns false.
func scanLog(b *sbucket, prefix []byte, from uint64, fn func(seq uint64, rec []byte) bool) {
	c := b.Cursor()
	seek := binary.BigEndian.AppendUint64(bytes.Clone(prefix), chunkStart(from))
	for k, v := c.Seek(seek); isChunkKey(k, prefix); k, v = c.Next() {
		ok := chunkRecords(binary.BigEndian.Uint64(k[len(prefix):]), v, func(seq uint64, rec []byte) bool {
			return seq < from || fn(seq, rec)
		})
		if !ok {
			return
		}
	}
}

// scanLogBack calls fn for the owner's records newest first until fn
// returns false.
func scanLogBack(b *sbucket, prefix []byte, fn func(seq uint64, rec []byte) bool) {
	type record struct {
		seq uint64
		rec []byte
	}
	c := b.Cursor()
	var recs []record
	for k, v := lastChunk(c, prefix); isChunkKey(k, prefix); k, v = c.Prev() {
		recs = recs[:0]
		chunkRecords(binary.BigEndian.Uint64(k[len(prefix):]), v, func(seq uint64, rec []byte) bool {
			recs = append(recs, record{seq, rec})
			return true
		})
		for i := len(recs) - 1; i >= 0; i-- {
			if !fn(recs[i].seq, recs[i].rec) {
				return
			}
		}
	}
}

// lastChunk positions c at the owner's last chunk (or at a key of
// another owner, or nil, when it has none).
func lastChunk(c *scursor, prefix []byte) ([]byte, []byte) {
	end := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	if k, _ := c.Seek(end); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// lastLogSeq is the owner's newest sequence number (0: none).
func lastLogSeq(b *sbucket, prefix []byte) uint64 {
	var last uint64
	if k, v := lastChunk(b.Cursor(), prefix); isChunkKey(k, prefix) {
		chunkRecords(binary.BigEndian.Uint64(k[len(prefix):]), v, func(seq uint64, _ []byte) bool {
			last = seq
			return true
		})
	}
	return last
}

// legacyLogs are the buckets that held these logs one record per key
// (owner prefix | seq) before they were chunked (session 10), and the
// chunked buckets that replace them.
var legacyLogs = []struct{ top, old, chunked []byte }{
	{bTrader, []byte("ledger"), bLedger},
	{bTrader, []byte("order_events"), bOrderEvents},
	{bMarket, []byte("trades"), bTrades},
}

// migrateLogs rewrites logs kept one record per key into chunks, in the
// caller's transaction, and drops the old buckets; it reports how many
// records it moved. The chunks are exactly what applying the same log
// with chunked logs would have written (a chunk's value depends only on
// its records), so every replica converts to the same state, whatever
// index its file was at. A chunk the new bucket already holds is
// extended, not replaced.
func migrateLogs(tx *bolt.Tx) (int, error) {
	moved := 0
	for _, l := range legacyLogs {
		top := tx.Bucket(l.top)
		if top == nil {
			continue
		}
		old := top.Bucket(l.old)
		if old == nil {
			continue
		}
		nb, err := top.CreateBucketIfNotExists(l.chunked)
		if err != nil {
			return moved, err
		}
		w := &chunkWriter{b: nb}
		c := old.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) < 9 {
				return moved, fmt.Errorf("%w: %s/%s key %x is not owner | sequence", ErrCorrupt, l.top, l.old, k)
			}
			if err := w.add(bytes.Clone(k[:len(k)-8]), binary.BigEndian.Uint64(k[len(k)-8:]), v); err != nil {
				return moved, err
			}
			moved++
		}
		if err := w.flush(); err != nil {
			return moved, err
		}
		if err := top.DeleteBucket(l.old); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// legacyOrderIndex is the bucket that held each trader's order index one
// key per order (account | order ID -> nothing) before it was chunked
// (session 12) into bOrderIndex.
var legacyOrderIndex = []byte("acct_orders")

// migrateOrderIndex rewrites a per-key order index into chunks, in the
// caller's transaction, and drops the old bucket; it reports how many
// orders it moved. An account's keys are in order-ID order, which is the
// order it placed them in, so the record with sequence n is its n-th
// order, exactly what applying the same log with the chunked index would
// have written: every replica converts to the same state.
func migrateOrderIndex(tx *bolt.Tx) (int, error) {
	top := tx.Bucket(bTrader)
	if top == nil {
		return 0, nil
	}
	old := top.Bucket(legacyOrderIndex)
	if old == nil {
		return 0, nil
	}
	nb, err := top.CreateBucketIfNotExists(bOrderIndex)
	if err != nil {
		return 0, err
	}
	if k, _ := nb.Cursor().First(); k != nil {
		return 0, fmt.Errorf("%w: both trader/%s and trader/%s hold an order index", ErrCorrupt, legacyOrderIndex, bOrderIndex)
	}
	moved := 0
	var acct, seq uint64
	w := &chunkWriter{b: nb}
	c := old.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 16 {
			return moved, fmt.Errorf("%w: trader/%s key %x is not account | order id", ErrCorrupt, legacyOrderIndex, k)
		}
		if a := binary.BigEndian.Uint64(k); a != acct || moved == 0 {
			acct, seq = a, 0
		}
		seq++
		if err := w.add(u64key(acct), seq, k[8:]); err != nil {
			return moved, err
		}
		moved++
	}
	if err := w.flush(); err != nil {
		return moved, err
	}
	return moved, top.DeleteBucket(legacyOrderIndex)
}

// chunkWriter builds chunks in a bbolt bucket from records given in key
// order (owner, then sequence), for the conversions above. A chunk the
// bucket already holds is extended, not replaced.
type chunkWriter struct {
	b        *bolt.Bucket
	key, val []byte
}

func (w *chunkWriter) add(prefix []byte, seq uint64, rec []byte) error {
	ck := binary.BigEndian.AppendUint64(prefix, chunkStart(seq))
	if !bytes.Equal(ck, w.key) {
		if err := w.flush(); err != nil {
			return err
		}
		w.key, w.val = ck, bytes.Clone(w.b.Get(ck))
	}
	w.val = binary.AppendUvarint(w.val, seq-chunkStart(seq))
	w.val = binary.AppendUvarint(w.val, uint64(len(rec)))
	w.val = append(w.val, rec...)
	return nil
}

// flush writes the chunk being built.
func (w *chunkWriter) flush() error {
	if w.key == nil {
		return nil
	}
	return w.b.Put(w.key, w.val)
}
