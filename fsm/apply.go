package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/hats-trading/hats/trader"
)

// maxPrunePerCommand bounds clean-up work done inside one command so Apply
// time stays flat; expired records are removed a few at a time.
const maxPrunePerCommand = 8

// applyCommand is the one dispatch point. Each applyX validates everything
// before its first write: a state transaction spans a whole Raft batch, so a
// rejected command must leave no partial change behind.
func (f *FSM) applyCommand(tx *stx, c *Command, index uint64) *Result {
	var idemKey []byte
	var dg [32]byte
	if c.Key != "" {
		idemKey = append(u64key(c.Account), c.Key...)
		dg = digest(c)
		if rec := tx.Bucket(bTrader).Bucket(bIdem).Get(idemKey); rec != nil {
			r := replayResult(rec, dg)
			if r.Code == CodeIdempotencyReused {
				r.Index = index
			}
			return r
		}
	}
	var res *Result
	switch c.Type {
	case TypeInitCluster:
		res = applyInitCluster(tx, c)
	case TypeSetNode:
		res = applySetNode(tx, c)
		f.members.Add(1)
	case TypeRemoveNode:
		res = applyRemoveNode(tx, c)
		f.members.Add(1)
	case TypeRegister:
		res = f.applyRegister(tx, c)
	case TypeCreateSession:
		res = f.applyCreateSession(tx, c)
	case TypeRevokeSession:
		res = applyRevokeSession(tx, c)
	case TypeReassign:
		res = applyReassign(tx, c)
	case TypeDeposit, TypeWithdraw:
		res = f.applyCash(tx, c)
	case TypeProfile:
		res = f.applyProfile(tx, c)
	case TypeSetInstrument:
		res = f.applySetInstrument(tx, c)
	case TypeDepositShares, TypeWithdrawShares:
		res = f.applyShares(tx, c)
	case TypePlaceOrder:
		res = f.applyPlace(tx, c)
	case TypeCancelOrder:
		res = f.applyCancel(tx, c)
	case TypeAmendOrder:
		res = f.applyAmend(tx, c)
	case TypeTick:
		res = f.applyTick(tx, c)
	case TypeSetRules:
		res = f.applySetRules(tx, c)
	default:
		// Decode accepts only known types, so this is a programming error.
		panic(fmt.Sprintf("fsm: no apply for %s", c.Type))
	}
	res.Index = index
	if idemKey != nil {
		f.storeIdempotent(tx, c, idemKey, dg, res)
	}
	return res
}

func replayResult(rec []byte, dg [32]byte) *Result {
	if len(rec) < 40 || !bytes.Equal(rec[8:40], dg[:]) {
		return &Result{Code: CodeIdempotencyReused, Message: "this idempotency key was already used for a different request"}
	}
	r, err := DecodeResult(rec[40:])
	if err != nil {
		panic(fmt.Sprintf("fsm: stored idempotency record: %v", err))
	}
	r.Replay = true
	return r
}

// storeIdempotent records the result under the key (time | digest | result)
// and prunes a few records older than IdempotencyTTL, judged by the
// leader-stamped command time so every replica prunes the same ones.
// f.idemHead remembers where the last prune stopped (every time-index key
// before it is gone), so the scan does not step over the deletions still
// held in memory layers; it is only a cache: it is dropped when a record
// lands before it and whenever the state is reloaded.
func (f *FSM) storeIdempotent(tx *stx, c *Command, key []byte, dg [32]byte, res *Result) {
	tb := tx.Bucket(bTrader)
	idem, byTime := tb.Bucket(bIdem), tb.Bucket(bIdemByTime)
	rec := append(u64key(uint64(c.Time)), dg[:]...)
	rec = append(rec, EncodeResult(res)...)
	must(idem.Put(key, rec))
	tk := append(u64key(uint64(c.Time)), key...)
	must(byTime.Put(tk, nil))
	if f.idemHead != nil && bytes.Compare(tk, f.idemHead) <= 0 {
		f.idemHead = nil
	}

	cutoff := c.Time - int64(IdempotencyTTL)
	cur := byTime.Cursor()
	var old [][]byte
	k, _ := cur.First()
	if f.idemHead != nil {
		k, _ = cur.Seek(f.idemHead)
	}
	for ; k != nil && len(old) < maxPrunePerCommand; k, _ = cur.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			break
		}
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		must(byTime.Delete(k))
		must(idem.Delete(k[8:]))
	}
	if len(old) > 0 {
		f.idemHead = old[len(old)-1]
	}
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("fsm: state write: %v", err))
	}
}

func applyInitCluster(tx *stx, c *Command) *Result {
	meta := tx.Bucket(bMeta)
	if meta.Get(kClusterKey) != nil {
		return reject(ErrAlreadyInitialized)
	}
	if c.ClusterKey == "" {
		return reject(fmt.Errorf("%w: empty cluster key", ErrInvalidCommand))
	}
	must(meta.Put(kClusterKey, []byte(c.ClusterKey)))
	return &Result{}
}

func applySetNode(tx *stx, c *Command) *Result {
	if c.NodeID == "" {
		return reject(fmt.Errorf("%w: empty node id", ErrInvalidCommand))
	}
	w := writer{}
	w.str(c.RaftAddr)
	w.str(c.HTTPAddr)
	w.str(c.GossipAddr)
	must(tx.Bucket(bCluster).Bucket(bNodes).Put([]byte(c.NodeID), w.b))
	return &Result{}
}

func applyRemoveNode(tx *stx, c *Command) *Result {
	must(tx.Bucket(bCluster).Bucket(bNodes).Delete([]byte(c.NodeID)))
	return &Result{}
}

func (f *FSM) applyRegister(tx *stx, c *Command) *Result {
	for _, err := range []error{trader.ValidateUsername(c.Username), trader.ValidateName(c.Name), trader.ValidateEmail(c.Email)} {
		if err != nil {
			return reject(err)
		}
	}
	if len(c.PassHash) == 0 {
		return reject(fmt.Errorf("%w: empty password hash", ErrInvalidCommand))
	}
	tb := tx.Bucket(bTrader)
	users := tb.Bucket(bUsers)
	if users.Get([]byte(c.Username)) != nil {
		return reject(fmt.Errorf("%w: %q", ErrUsernameTaken, c.Username))
	}
	meta := tx.Bucket(bMeta)
	id := getU64(meta, kNextAccount) + 1
	putU64(meta, kNextAccount, id)
	acct := &trader.Account{ID: id, Username: c.Username, Name: c.Name, Email: c.Email, CreatedAt: c.Time}
	f.hot.putAccount(acct)
	must(users.Put([]byte(c.Username), u64key(id)))
	must(tb.Bucket(bCredentials).Put(u64key(id), c.PassHash))
	return &Result{Account: acct}
}

// session record: account id | expires | created | assigned node id
func (f *FSM) applyCreateSession(tx *stx, c *Command) *Result {
	tb := tx.Bucket(bTrader)
	idb := tb.Bucket(bUsers).Get([]byte(c.Username))
	if idb == nil {
		return reject(fmt.Errorf("%w: %q", ErrUnknownUser, c.Username))
	}
	if len(c.TokenHash) != 32 {
		return reject(fmt.Errorf("%w: token hash must be 32 bytes", ErrInvalidCommand))
	}
	sessions := tb.Bucket(bSessions)
	pruneSessions(sessions, c.Time)
	rec := append(bytes.Clone(idb), u64key(uint64(c.Expires))...)
	rec = append(rec, u64key(uint64(c.Time))...)
	rec = append(rec, c.NodeID...)
	must(sessions.Put(c.TokenHash, rec))
	assign(tx, c.NodeID, +1)
	acct, _ := f.hot.account(tx, binary.BigEndian.Uint64(idb))
	return &Result{Account: acct, Expires: c.Expires}
}

// pruneSessions deletes a bounded number of expired sessions. Sessions are
// keyed by a random hash, so the scan starts at a point derived from the
// command time and wraps around once; every replica sees the same time and
// the same keys, so every replica deletes the same sessions.
func pruneSessions(sessions *sbucket, now int64) {
	start := u64key(uint64(now))
	var dead [][]byte
	scanned := 0
	visit := func(k, v []byte) bool {
		scanned++
		if len(v) >= 16 && int64(binary.BigEndian.Uint64(v[8:16])) < now {
			dead = append(dead, bytes.Clone(k))
		}
		return scanned < 4*maxPrunePerCommand && len(dead) < maxPrunePerCommand
	}
	cur := sessions.Cursor()
	more := true
	for k, v := cur.Seek(start); k != nil && more; k, v = cur.Next() {
		more = visit(k, v)
	}
	for k, v := cur.First(); k != nil && more && bytes.Compare(k, start) < 0; k, v = cur.Next() {
		more = visit(k, v)
	}
	for _, k := range dead {
		assign(sessions.Tx(), string(sessions.Get(k)[24:]), -1)
		must(sessions.Delete(k))
	}
}

func applyRevokeSession(tx *stx, c *Command) *Result {
	sessions := tx.Bucket(bTrader).Bucket(bSessions)
	rec := sessions.Get(c.TokenHash)
	if rec == nil || binary.BigEndian.Uint64(rec[:8]) != c.Account {
		return reject(ErrUnknownSession)
	}
	assign(tx, string(rec[24:]), -1)
	must(sessions.Delete(c.TokenHash))
	return &Result{}
}

// applyReassign moves a session to another Trading Server.
func applyReassign(tx *stx, c *Command) *Result {
	sessions := tx.Bucket(bTrader).Bucket(bSessions)
	rec := sessions.Get(c.TokenHash)
	if rec == nil || binary.BigEndian.Uint64(rec[:8]) != c.Account {
		return reject(ErrUnknownSession)
	}
	old := string(rec[24:])
	if old == c.NodeID {
		return &Result{}
	}
	assign(tx, old, -1)
	assign(tx, c.NodeID, +1)
	nrec := append(bytes.Clone(rec[:24]), c.NodeID...)
	must(sessions.Put(c.TokenHash, nrec))
	return &Result{}
}

var bAssignments = []byte("assignments") // cluster: node id -> sessions assigned

// assign adjusts the count of sessions assigned to a node.
func assign(tx *stx, nodeID string, delta int64) {
	if nodeID == "" {
		return
	}
	b := tx.Bucket(bCluster).Bucket(bAssignments)
	n := int64(getU64(b, []byte(nodeID))) + delta
	if n <= 0 {
		must(b.Delete([]byte(nodeID)))
		return
	}
	putU64(b, []byte(nodeID), uint64(n))
}

func (f *FSM) applyCash(tx *stx, c *Command) *Result {
	x := f.newExch(tx, c.Time)
	acct, ok := x.account(c.Account)
	if !ok {
		return reject(fmt.Errorf("%w: %d", ErrUnknownAccount, c.Account))
	}
	var next trader.Account
	var err error
	kind, delta := trader.EntryDeposit, c.Amount
	if c.Type == TypeDeposit {
		next, err = acct.Deposit(trader.Cents(c.Amount))
	} else {
		next, err = acct.Withdraw(trader.Cents(c.Amount))
		kind, delta = trader.EntryWithdrawal, -c.Amount
	}
	if err != nil {
		return reject(err)
	}
	*acct = next
	x.entry(c.Account, trader.Entry{Kind: kind, Cash: delta})
	x.flush()
	return &Result{Account: &next}
}

func (f *FSM) applyProfile(tx *stx, c *Command) *Result {
	acct, ok := f.hot.account(tx, c.Account)
	if !ok {
		return reject(fmt.Errorf("%w: %d", ErrUnknownAccount, c.Account))
	}
	if c.SetName {
		if err := trader.ValidateName(c.Name); err != nil {
			return reject(err)
		}
		acct.Name = c.Name
	}
	if c.SetEmail {
		if err := trader.ValidateEmail(c.Email); err != nil {
			return reject(err)
		}
		acct.Email = c.Email
	}
	f.hot.putAccount(acct)
	return &Result{Account: acct}
}

// getAccount reads an account record from tx. Inside Apply, accounts (and
// positions and book statistics) must be read and written through f.hot
// instead: the transaction holds them only as of the end of the last
// entry (hot.go). Views, which run between entries, read tx directly.
func getAccount(tx *stx, id uint64) (*trader.Account, bool) {
	v := tx.Bucket(bTrader).Bucket(bAccounts).Get(u64key(id))
	if v == nil {
		return nil, false
	}
	r := reader{b: v}
	a := decodeAccount(&r)
	if err := r.done(); err != nil {
		panic(fmt.Sprintf("fsm: stored account %d: %v", id, err))
	}
	return a, true
}

func putAccount(tx *stx, a *trader.Account) {
	must(tx.Bucket(bTrader).Bucket(bAccounts).Put(u64key(a.ID), encodeWith(a, encodeAccount)))
}
