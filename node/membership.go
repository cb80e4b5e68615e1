package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// JoinCluster asks the members named in Config.Join to add this node,
// retrying with backoff. A node with existing state is already a member;
// its join only refreshes its addresses, so failures there are logged, not
// fatal. Rejections that retrying cannot fix (the ID is in use by a live
// node) end at once.
func (n *Node) JoinCluster(ctx context.Context) error {
	if len(n.cfg.Join) == 0 {
		return nil
	}
	req := transport.JoinRequest{ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr, GossipAddr: n.cfg.GossipAddr}
	backoff := n.cfg.JoinBackoff
	var errs []string
	for attempt := 1; attempt <= n.cfg.JoinAttempts; attempt++ {
		for _, addr := range n.cfg.Join {
			if addr == n.cfg.HTTPAddr {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout+time.Second)
			err := n.peer.Join(actx, addr, req)
			cancel()
			if err == nil {
				n.log.Info("joined cluster", "via", addr, "attempt", attempt)
				return nil
			}
			if errors.Is(err, transport.ErrConflict) || errors.Is(err, transport.ErrIncompatible) {
				return fmt.Errorf("join via %s: %w", addr, err)
			}
			errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrJoinFailed, ctx.Err())
		case <-n.done:
			return ErrClosed
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
	last := errs
	if len(last) > len(n.cfg.Join) {
		last = last[len(last)-len(n.cfg.Join):]
	}
	return fmt.Errorf("%w: no member at %s accepted after %d attempts; last errors: %s",
		ErrJoinFailed, strings.Join(n.cfg.Join, ","), n.cfg.JoinAttempts, strings.Join(last, "; "))
}

// Join implements transport.Backend. It is idempotent: a member rejoining
// with the same ID and Raft address is a no-op apart from refreshing its
// HTTP address; the same ID with a new address replaces the old entry,
// unless the old address still answers as that node (two live nodes must
// never share an ID).
func (n *Node) Join(ctx context.Context, req transport.JoinRequest) error {
	return n.toLeader(ctx, func(ctx context.Context) error { return n.joinLocal(ctx, req) },
		func(ctx context.Context, addr string) error { return n.peer.Join(ctx, addr, req) })
}

func (n *Node) joinLocal(ctx context.Context, req transport.JoinRequest) error {
	n.rulesMu.Lock()
	defer n.rulesMu.Unlock()
	if err := n.checkJoinRules(ctx, req); err != nil {
		return err
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	id, addr := raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr)
	member := false
	for _, s := range cf.Configuration().Servers {
		switch {
		case s.ID == id && s.Address == addr:
			member = true
		case s.ID == id:
			if n.aliveAs(ctx, req.ID, req.HTTPAddr) {
				return fmt.Errorf("%w: node ID %q is in use by a live member at %s", ErrNodeIDInUse, req.ID, s.Address)
			}
			n.log.Info("replacing member with a new address", "id", id, "old", s.Address, "new", addr)
			if err := n.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("%w: remove old entry: %v", ErrNoLeader, err)
			}
		case s.Address == addr:
			n.log.Info("removing member whose address is reused", "id", s.ID, "addr", addr)
			if err := n.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
				return fmt.Errorf("%w: remove old entry: %v", ErrNoLeader, err)
			}
		}
	}
	if !member {
		if err := n.raft.AddVoter(id, addr, 0, 0).Error(); err != nil {
			return fmt.Errorf("%w: add voter: %v", ErrNoLeader, err)
		}
		n.log.Info("added voter", "id", id, "addr", addr)
	}
	res, err := n.Apply(ctx, &fsm.Command{Type: fsm.TypeSetNode, NodeID: req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr, GossipAddr: req.GossipAddr})
	if err != nil {
		return err
	}
	return res.Err()
}

// aliveAs reports whether the node recorded under id still answers at its
// recorded HTTP address (other than newHTTP) claiming to be id.
func (n *Node) aliveAs(ctx context.Context, id, newHTTP string) bool {
	if id == n.cfg.ID {
		return true
	}
	var old fsm.NodeAddrs
	_ = n.fsm.View(func(v *fsm.View) error { old, _ = v.Node(id); return nil })
	if old.HTTPAddr == "" || old.HTTPAddr == newHTTP {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := n.peer.Status(pctx, old.HTTPAddr)
	return err == nil && st.ID == id
}

// Remove implements transport.Backend.
func (n *Node) Remove(ctx context.Context, id string) error {
	return n.toLeader(ctx, func(ctx context.Context) error { return n.removeLocal(ctx, id) },
		func(ctx context.Context, addr string) error { return n.peer.Remove(ctx, addr, id) })
}

func (n *Node) removeLocal(ctx context.Context, id string) error {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	found := false
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == id {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: no member with id %q", transport.ErrNotFound, id)
	}
	if id != n.cfg.ID {
		// Forget the address first: once the leader removes itself it can
		// no longer commit anything.
		if _, err := n.Apply(ctx, &fsm.Command{Type: fsm.TypeRemoveNode, NodeID: id}); err != nil {
			return err
		}
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 0).Error(); err != nil {
		return fmt.Errorf("%w: remove %s: %v", ErrNoLeader, id, err)
	}
	n.log.Info("removed member", "id", id)
	return nil
}

// TransferLeadership implements transport.Backend.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	return n.toLeader(ctx, func(ctx context.Context) error { return n.transferLocal(id) },
		func(ctx context.Context, addr string) error { return n.peer.Transfer(ctx, addr, id) })
}

func (n *Node) transferLocal(id string) error {
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		var target raft.ServerAddress
		for _, s := range n.raft.GetConfiguration().Configuration().Servers {
			if string(s.ID) == id {
				target = s.Address
			}
		}
		if target == "" {
			return fmt.Errorf("%w: no member with id %q", transport.ErrNotFound, id)
		}
		if id == n.cfg.ID {
			return nil // already leads
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), target)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("%w: leadership transfer: %v", transport.ErrUnavailable, err)
	}
	return nil
}

// toLeader runs local when this node leads, else call against the leader's
// HTTP address, retrying while no leader is known and until ctx ends.
func (n *Node) toLeader(ctx context.Context, local func(ctx context.Context) error, call func(ctx context.Context, addr string) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	backoff := 10 * time.Millisecond
	for {
		if n.IsLeader() {
			return local(ctx)
		}
		addr, err := n.leaderHTTP()
		if err == nil {
			if addr == n.cfg.HTTPAddr {
				err = fmt.Errorf("%w: leadership is changing", ErrNoLeader)
			} else {
				err = call(ctx, addr)
				var ae *transport.APIError
				if err == nil || !(errors.Is(err, transport.ErrUnavailable) || (errors.As(err, &ae) && ae.Code == transport.CodeNoLeader)) {
					return err
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNoLeader, err)
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}
