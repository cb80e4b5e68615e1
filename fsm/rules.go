package fsm

import (
	"errors"
	"fmt"

	"github.com/hats-trading/hats/market"
)

// Rules versions make a change to what Apply does safe to roll out one
// node at a time. Every replica must apply every entry by the same rules,
// so a release that changes them (a check an order must now pass, say)
// cannot just start using them: during a rolling upgrade its nodes would
// apply entries differently from the old ones, and on replay an entry
// could turn out differently from what its client was told. Instead the
// rules in force are part of the replicated state (meta/rules; a state
// without the record is at RulesBase). A release applies every rules
// version up to its SupportedRules, by the version in force; the leader
// raises the version with a TypeSetRules entry only once every voter
// runs a release that supports it (node/rules.go), so all replicas switch
// at the same log index, and entries before it replay by the old rules.
// A node never lowers the version, refuses state from a newer one, and
// stops rather than apply an entry that raises it past what it supports.

// Rules versions.
const (
	// RulesBase is what every release applied before rules had versions.
	RulesBase uint64 = 1
	// RulesStopLimitCollar: a stop-limit order's limit price must lie
	// within the collar, as a limit order's does: around its trigger
	// price while it waits, around the reference price once triggered
	// (on entry and on amend). Before it, a stop-limit could carry any
	// limit and, once triggered, sweep the book up to it.
	RulesStopLimitCollar uint64 = 2

	// SupportedRules is the highest rules version this release applies.
	SupportedRules = RulesStopLimitCollar
)

// ErrRulesTooNew reports state (a file, a snapshot, a backup) whose
// rules version is newer than this release applies.
var ErrRulesTooNew = errors.New("state from a newer release")

var kRules = []byte("rules") // meta: the rules version in force

// rulesOf reads the rules version in force from the meta bucket.
func rulesOf(meta interface{ Get([]byte) []byte }) uint64 {
	if v := getU64(meta, kRules); v != 0 {
		return v
	}
	return RulesBase
}

// checkRules refuses state whose rules this node cannot apply.
func (f *FSM) checkRules(rules uint64) error {
	if rules > f.maxRules {
		return fmt.Errorf("%w: its state-machine rules version is %d, this node applies up to %d: run a newer hats on it", ErrRulesTooNew, rules, f.maxRules)
	}
	return nil
}

// MaxRules is the highest rules version this node applies (SupportedRules
// unless Options.MaxRules lowered it).
func (f *FSM) MaxRules() uint64 { return f.maxRules }

// applySetRules raises the rules version in force. The leader proposes it
// only when every voter supports it, so a node that does not is one that
// joined or was downgraded behind the cluster's back: applying on by its
// old rules would diverge, so it stops (rule 7).
func (f *FSM) applySetRules(tx *stx, c *Command) *Result {
	meta := tx.Bucket(bMeta)
	cur := rulesOf(meta)
	if c.Rules <= cur {
		return &Result{} // never lowered; a repeat changes nothing
	}
	if c.Rules > f.maxRules {
		panic(fmt.Sprintf("fsm: the cluster moved to state-machine rules version %d, this node applies up to %d: run a newer hats on it", c.Rules, f.maxRules))
	}
	putU64(meta, kRules, c.Rules)
	f.log.Info("state-machine rules version raised", "from", cur, "to", c.Rules)
	return &Result{}
}

// stopLimitCollar applies RulesStopLimitCollar to a stop-limit order with
// limit price limit: ref is its trigger price while it waits, the book's
// reference once it has triggered.
func stopLimitCollar(tx *stx, b *market.Book, o *market.Order, limit int64) error {
	if o.Type != market.StopLimit || rulesOf(tx.Bucket(bMeta)) < RulesStopLimitCollar {
		return nil
	}
	ref := o.Stop
	if o.Triggered {
		ref = b.Reference()
	}
	return market.CheckCollar(o.Side, limit, ref)
}
