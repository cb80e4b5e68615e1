package node

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// The Load Distribution role: every node can assign a client to a Trading
// Server (any node) and move it when that server dies. The choice uses the
// gossip view for health and the replicated session counts for load, so
// clients of a dead server spread evenly over the survivors.

// candidates are the Trading Servers a client may be assigned to: healthy
// members of the gossip ring, or, without gossip, every Raft member with a
// recorded HTTP address. Either way only Raft voters at the HTTP address
// the replicated state records for them: a gossip member is believed
// about its health, never about who it is or where clients should go.
func (n *Node) candidates() []transport.Member {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	recorded := map[string]string{} // voter ID -> recorded HTTP address
	_ = n.fsm.View(func(v *fsm.View) error {
		for _, s := range f.Configuration().Servers {
			if na, ok := v.Node(string(s.ID)); ok && na.HTTPAddr != "" && s.Suffrage == raft.Voter {
				recorded[na.ID] = na.HTTPAddr
			}
		}
		return nil
	})
	var out []transport.Member
	if n.gossip != nil {
		for _, m := range n.Members() {
			if m.Healthy && m.HTTPAddr != "" && recorded[m.ID] == m.HTTPAddr {
				out = append(out, m)
			}
		}
		return out
	}
	for id, addr := range recorded {
		out = append(out, transport.Member{ID: id, HTTPAddr: addr, Health: "unknown", Healthy: true})
	}
	slices.SortFunc(out, func(a, b transport.Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// chooseTS picks the least loaded candidate (fewest assigned sessions in
// the replicated state, then lowest ID), avoiding `avoid` when another
// candidate exists.
func (n *Node) chooseTS(avoid string) (transport.Member, []transport.Member, error) {
	cands := n.candidates()
	if len(cands) == 0 {
		return transport.Member{}, nil, fmt.Errorf("%w: no healthy Trading Server", transport.ErrUnavailable)
	}
	var load map[string]int64
	_ = n.fsm.View(func(v *fsm.View) error { load = v.Assignments(); return nil })
	pool := slices.DeleteFunc(slices.Clone(cands), func(m transport.Member) bool { return m.ID == avoid })
	if len(pool) == 0 {
		pool = cands
	}
	best := pool[0]
	for _, m := range pool[1:] {
		if load[m.ID] < load[best.ID] || (load[m.ID] == load[best.ID] && m.ID < best.ID) {
			best = m
		}
	}
	for i := range cands {
		cands[i].Sessions = load[cands[i].ID]
	}
	return best, cands, nil
}

// Reassign implements transport.Backend: the client's Trading Server
// stopped answering, so it asks any LDS for another one and keeps its
// session.
func (n *Node) Reassign(ctx context.Context, p transport.Principal, unreachable string) (transport.Assignment, error) {
	avoid := unreachable
	if avoid == "" {
		avoid = p.Node
	}
	ts, servers, err := n.chooseTS(avoid)
	if err != nil {
		return transport.Assignment{}, err
	}
	if ts.ID != p.Node {
		res, err := n.Apply(ctx, &fsm.Command{Type: fsm.TypeReassign, Account: p.AccountID, TokenHash: p.TokenHash, NodeID: ts.ID})
		if err != nil {
			return transport.Assignment{}, err
		}
		if err := res.Err(); err != nil {
			return transport.Assignment{}, fmt.Errorf("%w: %v", transport.ErrUnauthenticated, err)
		}
	}
	return transport.Assignment{Node: ts.ID, NodeAddr: ts.HTTPAddr, Servers: servers}, nil
}
