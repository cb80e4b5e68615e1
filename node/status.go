package node

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Status implements transport.Backend: this node's own view. It answers
// at once: its state hash is the last walk's (HashIndex says which state
// it is of), refreshed in the background (fsm.StatusHash).
func (n *Node) Status() transport.NodeStatus {
	return n.status(func() (string, uint64, error) { return n.fsm.StatusHash(statusHashMaxAge) })
}

// FreshStatus implements transport.Backend: Status with a state hash at
// most freshHashMaxAge old. Concurrent callers share one walk, so the
// unauthenticated endpoint costs at most one commit and walk per
// freshHashMaxAge however often it is called.
func (n *Node) FreshStatus() transport.NodeStatus {
	return n.status(func() (string, uint64, error) { return n.fsm.RecentHash(freshHashMaxAge) })
}

func (n *Node) status(hash func() (string, uint64, error)) transport.NodeStatus {
	st := transport.NodeStatus{
		ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr,
		State: n.raft.State().String(), Term: n.raft.CurrentTerm(),
		AppliedIndex: n.fsm.AppliedIndex(), CommitIndex: n.raft.CommitIndex(), LastIndex: n.raft.LastIndex(), RaftLogStore: n.logStore,
	}
	st.CheckpointIndex, st.CheckpointQueue, st.ApplyWaits = n.fsm.CheckpointStats()
	if fi, err := n.store.FirstIndex(); err == nil {
		st.FirstIndex = fi
	}
	st.MaxRules = n.fsm.MaxRules()
	if p := n.rulesPending.Load(); p != nil && n.raft.State() == raft.Leader {
		st.RulesPending = *p
	}
	early := n.repl.EarlyStats()
	st.EarlyAppendsSent, st.EarlyAppendsAccepted, st.EarlyAnswers = early.Sent, early.Accepted, early.Answered
	_, lid := n.raft.LeaderWithID()
	st.Leader = string(lid)
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == n.cfg.ID {
				st.Voter = s.Suffrage == raft.Voter
			}
		}
	}
	st.Roles = []string{"LDS", "TS"}
	es := n.eng.status()
	if es.Running {
		st.Roles = append(st.Roles, "ME")
	}
	st.MarketEngine = &es
	_ = n.fsm.View(func(v *fsm.View) error {
		st.Sessions, st.Rules = v.Assignments()[n.cfg.ID], v.Rules()
		return nil
	})
	st.Gossip = "disabled"
	for _, m := range n.Members() {
		if m.ID == n.cfg.ID {
			st.Gossip = m.Health
		}
	}
	if h, idx, err := hash(); err == nil {
		st.StateHash, st.HashIndex = h, idx
	} else {
		st.Error = err.Error()
	}
	// Read after the hash, so hash_index <= applied_index, equal when the
	// node is idle.
	st.AppliedIndex = n.fsm.AppliedIndex()
	return st
}

// ClusterStatus implements transport.Backend: every member in the Raft
// configuration, each asked for its own status; members that do not answer
// within a second are shown as unreachable.
func (n *Node) ClusterStatus(ctx context.Context) transport.ClusterStatus {
	out := transport.ClusterStatus{Term: n.raft.CurrentTerm()}
	_, lid := n.raft.LeaderWithID()
	out.Leader = string(lid)
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return out
	}
	servers := f.Configuration().Servers
	addrs := map[string]fsm.NodeAddrs{}
	_ = n.fsm.View(func(v *fsm.View) error {
		for _, na := range v.Nodes() {
			addrs[na.ID] = na
		}
		return nil
	})
	out.Nodes = make([]transport.NodeStatus, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		id := string(s.ID)
		if id == n.cfg.ID {
			out.Nodes[i] = n.Status()
			continue
		}
		base := transport.NodeStatus{ID: id, RaftAddr: string(s.Address), HTTPAddr: addrs[id].HTTPAddr, Voter: s.Suffrage == raft.Voter}
		wg.Add(1)
		go func(i int, base transport.NodeStatus) {
			defer wg.Done()
			if base.HTTPAddr == "" {
				base.State, base.Error = "unreachable", "no HTTP address recorded"
				out.Nodes[i] = base
				return
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := n.peer.Status(pctx, base.HTTPAddr)
			if err != nil {
				base.State, base.Error = "unreachable", err.Error()
				out.Nodes[i] = base
				return
			}
			st.Voter = base.Voter
			out.Nodes[i] = *st
		}(i, base)
	}
	wg.Wait()
	if n.gossip != nil {
		health := map[string]string{}
		for _, m := range n.Members() {
			health[m.ID] = m.Health
		}
		for i := range out.Nodes {
			if h, ok := health[out.Nodes[i].ID]; ok {
				out.Nodes[i].Gossip = h
			} else {
				out.Nodes[i].Gossip = "unknown"
			}
		}
	}
	for _, ns := range out.Nodes {
		if ns.MarketEngine != nil && ns.MarketEngine.Running {
			out.MarketEngine = ns.ID
		}
	}
	return out
}

// statusHashMaxAge is how old the state hash in a plain status may get
// before a background walk refreshes it (its index says which state it is
// of).
const statusHashMaxAge = time.Second

// freshHashMaxAge bounds the hash's age in /v1/status?fresh=true.
const freshHashMaxAge = 100 * time.Millisecond
