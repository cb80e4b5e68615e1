package fsm

import (
	"encoding/binary"

	"github.com/hats-trading/hats/trader"
)

// View is a read-only view of the applied state: the layers not yet
// checkpointed over a bbolt read transaction (store.go).
// It must not be used after the View callback returns.
type View struct{ tx *stx }

// AppliedIndex is the index this view reflects.
func (v *View) AppliedIndex() uint64 { return getU64(v.tx.Bucket(bMeta), kAppliedIndex) }

// ClusterKey is the shared secret nodes use to authenticate forwarded
// commands; empty before the cluster's first entry is applied.
func (v *View) ClusterKey() string { return string(v.tx.Bucket(bMeta).Get(kClusterKey)) }

// Rules is the state-machine rules version in force (rules.go).
func (v *View) Rules() uint64 { return rulesOf(v.tx.Bucket(bMeta)) }

// Account returns an account by id.
func (v *View) Account(id uint64) (*trader.Account, bool) { return getAccount(v.tx, id) }

// AccountByUsername returns an account and its password hash.
func (v *View) AccountByUsername(username string) (acct *trader.Account, passHash []byte, ok bool) {
	tb := v.tx.Bucket(bTrader)
	idb := tb.Bucket(bUsers).Get([]byte(username))
	if idb == nil {
		return nil, nil, false
	}
	id := binary.BigEndian.Uint64(idb)
	acct, ok = getAccount(v.tx, id)
	if !ok {
		return nil, nil, false
	}
	return acct, append([]byte(nil), tb.Bucket(bCredentials).Get(idb)...), true
}

// Session is a stored login session.
type Session struct {
	Account uint64
	Expires int64
	Created int64
	Node    string // the Trading Server this session is assigned to
}

// Session looks up a session by the sha256 of its token.
func (v *View) Session(tokenHash []byte) (Session, bool) {
	rec := v.tx.Bucket(bTrader).Bucket(bSessions).Get(tokenHash)
	if len(rec) < 24 {
		return Session{}, false
	}
	return Session{
		Account: binary.BigEndian.Uint64(rec[0:8]),
		Expires: int64(binary.BigEndian.Uint64(rec[8:16])),
		Created: int64(binary.BigEndian.Uint64(rec[16:24])),
		Node:    string(rec[24:]),
	}, true
}

// Assignments returns how many live sessions each node is assigned.
func (v *View) Assignments() map[string]int64 {
	out := map[string]int64{}
	_ = v.tx.Bucket(bCluster).Bucket(bAssignments).ForEach(func(k, val []byte) error {
		if len(val) == 8 {
			out[string(k)] = int64(binary.BigEndian.Uint64(val))
		}
		return nil
	})
	return out
}

// NodeAddrs are the addresses a member registered when it joined.
type NodeAddrs struct {
	ID         string
	RaftAddr   string
	HTTPAddr   string
	GossipAddr string
}

// Nodes lists registered members in ID order.
func (v *View) Nodes() []NodeAddrs {
	var out []NodeAddrs
	_ = v.tx.Bucket(bCluster).Bucket(bNodes).ForEach(func(k, val []byte) error {
		r := reader{b: val}
		n := NodeAddrs{ID: string(k), RaftAddr: r.str(), HTTPAddr: r.str(), GossipAddr: r.str()}
		if r.done() == nil {
			out = append(out, n)
		}
		return nil
	})
	return out
}

// Node returns one member's addresses.
func (v *View) Node(id string) (NodeAddrs, bool) {
	val := v.tx.Bucket(bCluster).Bucket(bNodes).Get([]byte(id))
	if val == nil {
		return NodeAddrs{}, false
	}
	r := reader{b: val}
	n := NodeAddrs{ID: id, RaftAddr: r.str(), HTTPAddr: r.str(), GossipAddr: r.str()}
	return n, r.done() == nil
}

// CountAccounts returns the number of accounts and their total cash, used
// by conservation checks.
func (v *View) CountAccounts() (n int, totalCash trader.Cents) {
	_ = v.tx.Bucket(bTrader).Bucket(bAccounts).ForEach(func(k, val []byte) error {
		r := reader{b: val}
		a := decodeAccount(&r)
		n++
		totalCash += a.Cash
		return nil
	})
	return n, totalCash
}
