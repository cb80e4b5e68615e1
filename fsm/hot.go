package fsm

import (
	"cmp"
	"slices"
	"strings"

	"github.com/hats-trading/hats/trader"
)

// hot caches the records nearly every order reads and rewrites: accounts,
// positions and book statistics. A batch entry of hundreds of orders from
// a few dozen traders would otherwise read, decode, encode and write the
// same few records through the B+tree once per order; here each is read
// once, changed in memory and written once per Raft entry.
//
// Determinism: dirty records are written to the active layer at the
// end of every Raft entry (ApplyBatch calls flush per entry), a point that
// is the same on every replica, so the transaction between entries (what
// View, Hash and Snapshot see) is exactly what per-command writes would
// have left. Inside Apply every read and write of these three buckets goes
// through the cache. Records are handed out and taken back as copies, so
// a command that changes a record and then rejects leaves nothing behind
// unless it puts it back. The cache is dropped whenever the transaction is
// rolled back or the state replaced (abandonLocked, Restore, open).
type hot struct {
	accts      map[uint64]*trader.Account
	pos        map[posKey]*trader.Position
	stats      map[string]*BookStats
	dirtyAccts map[uint64]struct{}
	dirtyPos   map[posKey]struct{}
	dirtyStats map[string]struct{}
}

// posKey names a position in memory; in the file its key is
// acctKey(acct, sym), and comparePosKeys orders posKeys as those keys.
type posKey struct {
	acct uint64
	sym  string
}

func comparePosKeys(a, b posKey) int {
	if c := cmp.Compare(a.acct, b.acct); c != 0 {
		return c
	}
	return strings.Compare(a.sym, b.sym)
}

// hotMaxClean bounds the clean records kept between entries; past it the
// cache starts over (it is only a cache of what the file holds).
const hotMaxClean = 100_000

func newHot() *hot {
	return &hot{
		accts: map[uint64]*trader.Account{}, pos: map[posKey]*trader.Position{}, stats: map[string]*BookStats{},
		dirtyAccts: map[uint64]struct{}{}, dirtyPos: map[posKey]struct{}{}, dirtyStats: map[string]struct{}{},
	}
}

// account returns a copy of account id.
func (h *hot) account(tx *stx, id uint64) (*trader.Account, bool) {
	a, ok := h.accts[id]
	if !ok {
		if a, ok = getAccount(tx, id); !ok {
			return nil, false
		}
		h.accts[id] = a
	}
	cp := *a
	return &cp, true
}

// putAccount stores a copy of a, to be written at the end of the entry.
// The cached record is overwritten in place: it is never handed out.
func (h *hot) putAccount(a *trader.Account) {
	if c, ok := h.accts[a.ID]; ok {
		*c = *a
	} else {
		cp := *a
		h.accts[a.ID] = &cp
	}
	h.dirtyAccts[a.ID] = struct{}{}
}

// position returns a copy of acct's position in sym (zero if none).
func (h *hot) position(tx *stx, acct uint64, sym string) *trader.Position {
	k := posKey{acct, sym}
	p, ok := h.pos[k]
	if !ok {
		p = &trader.Position{Symbol: sym}
		if v := tx.Bucket(bTrader).Bucket(bPositions).Get(acctKey(acct, []byte(sym))); v != nil {
			p = decodeWhole(v, decodePosition, "position")
		}
		h.pos[k] = p
	}
	cp := *p
	return &cp
}

// putPosition stores a copy of p as acct's position; an all-zero position
// is deleted when written.
func (h *hot) putPosition(acct uint64, p *trader.Position) {
	k := posKey{acct, p.Symbol}
	if c, ok := h.pos[k]; ok {
		*c = *p
	} else {
		cp := *p
		h.pos[k] = &cp
	}
	h.dirtyPos[k] = struct{}{}
}

// editBookStats returns sym's cached book statistics (zero if none) to
// change in place, and marks them to be written at the end of the entry.
// Unlike accounts and positions they are not handed out as copies: both
// callers change them after the command's outcome is settled (fills and
// book sequence numbers), so there is nothing to undo.
func (h *hot) editBookStats(tx *stx, sym string) *BookStats {
	st, ok := h.stats[sym]
	if !ok {
		st = &BookStats{}
		if v := tx.Bucket(bMarket).Bucket(bBooks).Get([]byte(sym)); v != nil {
			st = decodeWhole(v, decodeBookStats, "book stats")
		}
		h.stats[sym] = st
	}
	h.dirtyStats[sym] = struct{}{}
	return st
}

// flush writes every dirty record into tx in key order.
func (h *hot) flush(tx *stx) {
	for _, id := range sortedKeys(h.dirtyAccts) {
		putAccount(tx, h.accts[id])
	}
	pb := tx.Bucket(bTrader).Bucket(bPositions)
	for _, k := range sortedKeysFunc(h.dirtyPos, comparePosKeys) {
		p := h.pos[k]
		key := acctKey(k.acct, []byte(k.sym))
		if p.Qty == 0 && p.Reserved == 0 && p.Cost == 0 && p.Realized == 0 {
			must(pb.Delete(key))
			continue
		}
		must(pb.Put(key, encodeWith(p, encodePosition)))
	}
	sb := tx.Bucket(bMarket).Bucket(bBooks)
	for _, sym := range sortedKeys(h.dirtyStats) {
		must(sb.Put([]byte(sym), encodeWith(h.stats[sym], encodeBookStats)))
	}
	clear(h.dirtyAccts)
	clear(h.dirtyPos)
	clear(h.dirtyStats)
	if len(h.accts)+len(h.pos) > hotMaxClean {
		clear(h.accts)
		clear(h.pos)
	}
}

// sortedKeys returns a set's keys in order.
func sortedKeys[K cmp.Ordered](set map[K]struct{}) []K {
	return sortedKeysFunc(set, cmp.Compare[K])
}

// sortedKeysFunc returns a set's keys in the order compare gives.
func sortedKeysFunc[K comparable](set map[K]struct{}, compare func(a, b K) int) []K {
	if len(set) == 0 {
		return nil
	}
	keys := make([]K, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compare)
	return keys
}
