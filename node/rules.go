package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// The leader's side of state-machine rules versions (fsm/rules.go): it
// raises the version in force to the highest one every member of the
// Raft configuration supports, as each member's status reports it (a
// release from before rules versions reports none: fsm.RulesBase). So in
// a rolling upgrade the cluster keeps the old rules until the last node
// runs the new release, then every replica switches at one log index. A
// member that cannot be asked (down, unreachable) holds the raise back.
// Joins and raises are serialized on the leader, and a node whose release
// applies less than the rules in force cannot join, so no raise can pass
// over a member that would have to stop at it.

// rulesCheckInterval is how often a leader looks for a raise.
const rulesCheckInterval = 2 * time.Second

// watchRules runs raiseRules on a ready leader (every rulesCheckInterval).
func (n *Node) watchRules() {
	if n.raft.State() != raft.Leader || n.readyTerm.Load() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if err := n.raiseRules(ctx); err != nil {
		n.log.Debug("rules version not raised", "err", err)
	}
}

// rulesInForce is the rules version of the applied state.
func (n *Node) rulesInForce() uint64 {
	r := fsm.RulesBase
	_ = n.fsm.View(func(v *fsm.View) error { r = v.Rules(); return nil })
	return r
}

// rulesAskTimeout bounds the status call to one member.
const rulesAskTimeout = time.Second

// raiseRules commits the highest rules version every member supports, if
// that is above the one in force. The members are asked without rulesMu
// (a dead one must not hold joins up); under it the configuration must
// still be the one asked about, so a node that joined meanwhile is not
// passed over. What holds a raise back is kept for the leader's status
// (rules_pending).
func (n *Node) raiseRules(ctx context.Context) (err error) {
	cur, own := n.rulesInForce(), n.fsm.MaxRules()
	if own <= cur {
		n.rulesPending.Store(nil)
		return nil
	}
	target, holder := own, ""
	defer func() {
		why := ""
		switch {
		case err != nil:
			why = fmt.Sprintf("rules version %d waits: %v", own, err)
		case holder != "":
			why = fmt.Sprintf("rules version %d waits: member %s applies up to %d", own, holder, target)
		}
		if why == "" {
			n.rulesPending.Store(nil)
		} else {
			n.rulesPending.Store(&why)
		}
	}()
	asked, err := n.configuration()
	if err != nil {
		return err
	}
	for _, s := range asked.Servers {
		id := string(s.ID)
		if id == n.cfg.ID {
			continue
		}
		var a fsm.NodeAddrs
		ok := false
		_ = n.fsm.View(func(v *fsm.View) error { a, ok = v.Node(id); return nil })
		if !ok || a.HTTPAddr == "" {
			return fmt.Errorf("member %s has no recorded API address yet", id)
		}
		actx, cancel := context.WithTimeout(ctx, rulesAskTimeout)
		st, err := n.peer.Status(actx, a.HTTPAddr)
		cancel()
		if err != nil {
			return fmt.Errorf("ask member %s: %w", id, err)
		}
		if st.ID != id {
			return fmt.Errorf("member %s's address %s answers as %q", id, a.HTTPAddr, st.ID)
		}
		if m := supportedRules(st.MaxRules); m < target {
			target, holder = m, id
		}
	}
	if target <= cur {
		return nil
	}
	n.rulesMu.Lock()
	defer n.rulesMu.Unlock()
	now, err := n.configuration()
	if err != nil {
		return err
	}
	if now.Index != asked.Index {
		return errors.New("the membership changed while its members were asked; next round")
	}
	res, err := n.applyLocal(ctx, &fsm.Command{Type: fsm.TypeSetRules, Rules: target})
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		return err
	}
	n.log.Info("state-machine rules version raised: every member runs a release that applies it", "from", cur, "to", target)
	return nil
}

// supportedRules reads a status's or join request's max_rules: absent
// (0) from a release before rules versions, which applies RulesBase.
func supportedRules(v uint64) uint64 { return max(v, fsm.RulesBase) }

// configAt is a Raft configuration and the index it was committed (or
// appended) at; the index tells whether membership changed in between.
type configAt struct {
	raft.Configuration
	Index uint64
}

// configuration is the latest Raft configuration.
func (n *Node) configuration() (configAt, error) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return configAt{}, err
	}
	return configAt{Configuration: cf.Configuration(), Index: cf.Index()}, nil
}

// checkJoinRules refuses a joining node whose release cannot apply the
// rules in force. It reads them after a barrier, so a raise this leader
// (or an earlier one) has put in the log counts even before this leader
// had applied it, or when its outcome was unknown to the raise. Above the
// base rules it asks the node itself (its API serves before it joins):
// the join request says nothing of the release, so that a new node can
// still join through a leader on a release from before rules versions,
// whose API refuses fields it does not know. Callers hold rulesMu.
func (n *Node) checkJoinRules(ctx context.Context, req transport.JoinRequest) error {
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	cur := n.rulesInForce()
	if cur <= fsm.RulesBase {
		return nil
	}
	actx, cancel := context.WithTimeout(ctx, rulesAskTimeout)
	st, err := n.peer.Status(actx, req.HTTPAddr)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: ask the joining node %s at %s which state-machine rules it applies: %v", transport.ErrUnavailable, req.ID, req.HTTPAddr, err)
	}
	if st.ID != req.ID {
		return fmt.Errorf("%w: %s answers as %q, not the joining node %s", transport.ErrUnavailable, req.HTTPAddr, st.ID, req.ID)
	}
	if have := supportedRules(st.MaxRules); have < cur {
		return fmt.Errorf("%w: node %s applies state-machine rules up to version %d, the cluster runs version %d: upgrade hats on it first", ErrIncompatible, req.ID, have, cur)
	}
	return nil
}
