package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Read implements transport.Backend. Stale reads use local state as it is.
// Leader reads wait until local state has caught up with what the leader
// has applied. Linearizable reads wait for a read index the leader obtained
// after confirming with a quorum that it still leads, so a deposed leader's
// state is never served.
func (n *Node) Read(ctx context.Context, c transport.Consistency, fn func(*fsm.View) error) error {
	if c != transport.Stale {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
			defer cancel()
		}
		idx, err := n.readIndex(ctx, c == transport.Linearizable)
		if err != nil {
			return err
		}
		if !n.fsm.WaitApplied(ctx.Done(), idx) {
			return fmt.Errorf("%w: local state did not reach index %d in time", transport.ErrUnavailable, idx)
		}
	}
	return n.fsm.View(fn)
}

// readIndex obtains the index a read must wait for, from this node when it
// leads or from the leader otherwise, retrying while no leader is known.
func (n *Node) readIndex(ctx context.Context, verify bool) (uint64, error) {
	backoff := 5 * time.Millisecond
	for {
		var idx uint64
		var err error
		if n.IsLeader() {
			idx, err = n.ReadIndex(ctx, verify)
		} else if addr, lerr := n.leaderHTTP(); lerr != nil {
			err = lerr
		} else {
			idx, err = n.peer.ReadIndex(ctx, addr, n.ClusterKey(), verify)
		}
		if err == nil {
			return idx, nil
		}
		var ae *transport.APIError
		retry := errors.Is(err, ErrNoLeader) || errors.Is(err, transport.ErrUnavailable) ||
			errors.Is(err, ErrOutcomeUnknown) || (errors.As(err, &ae) && ae.Code == transport.CodeForbidden)
		if !retry {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: read index: %v", ErrNoLeader, err)
		case <-n.done:
			return 0, ErrClosed
		case <-time.After(backoff):
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

// ReadIndex implements transport.Backend (leader side). Without verify it
// is the leader's applied index. With verify it is the commit index, taken
// only once this leader has committed an entry of its own term (the barrier
// in onLeader) and confirmed by VerifyLeader with a quorum.
func (n *Node) ReadIndex(ctx context.Context, verify bool) (uint64, error) {
	if !n.IsLeader() {
		return 0, fmt.Errorf("%w: %s is not the leader", ErrNoLeader, n.cfg.ID)
	}
	if !verify {
		return n.fsm.AppliedIndex(), nil
	}
	for n.readyTerm.Load() != n.raft.CurrentTerm() {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: leader not ready for reads", ErrNoLeader)
		case <-time.After(2 * time.Millisecond):
		}
		if !n.IsLeader() {
			return 0, fmt.Errorf("%w: lost leadership", ErrNoLeader)
		}
	}
	idx := n.raft.CommitIndex()
	if err := n.repl.VerifyLeader(); err != nil {
		return 0, fmt.Errorf("%w: verify leader: %v", ErrNoLeader, err)
	}
	return idx, nil
}

// MarketBook implements transport.Backend.
func (n *Node) MarketBook(symbol string, depth int) (*fsm.BookSnapshot, bool) {
	return n.fsm.Book(symbol, depth)
}

// HasSymbol implements transport.Backend.
func (n *Node) HasSymbol(symbol string) bool { return n.fsm.HasSymbol(symbol) }

// MarketDataStale implements transport.Backend.
func (n *Node) MarketDataStale() bool { return n.eng.status().Stale }

// LeaderChanged returns a channel closed at the next leader change Raft
// observes (transport.LeaderWatcher: order streams tell their clients).
func (n *Node) LeaderChanged() <-chan struct{} { return n.leaders.changed() }

// LeaderHTTP returns the leader's HTTP address as this node knows it, ""
// when it knows none (transport.Backend).
func (n *Node) LeaderHTTP() string {
	addr, err := n.leaderHTTP()
	if err != nil {
		return ""
	}
	return addr
}
