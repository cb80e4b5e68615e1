package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hats-trading/hats/fsm"
)

// errNotApplied marks a failure that certainly left the command unapplied
// (rejected before it entered the log), so the write path may try again.
var errNotApplied = errors.New("not applied")

// Apply is the one write path every mutation takes: on the leader the
// command is stamped and applied through Raft; on a follower it is
// forwarded to the leader. Failures that certainly did not apply the command
// are retried until ctx (or ApplyTimeout) ends, at once when the leader
// changes and otherwise after a growing backoff; a failure after the command
// may have entered the log returns ErrOutcomeUnknown and is never retried
// here. The client resolves it by retrying with the same idempotency key.
func (n *Node) Apply(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	var lastErr error
	backoff := 5 * time.Millisecond
	for {
		select {
		case <-n.done:
			return nil, ErrClosed
		default:
		}
		var res *fsm.Result
		var err error
		changed := n.leaders.changed() // taken before the attempt: a change during it counts
		if n.IsLeader() {
			res, err = n.applyLocal(ctx, cmd)
		} else {
			res, err = n.forward(ctx, cmd)
		}
		if err == nil || !errors.Is(err, errNotApplied) {
			return res, err
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: gave up after %v", ErrNoLeader, lastErr)
		case <-changed: // a new leader (or none): try again at once
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// ApplyAsync is Apply answering through done instead of waiting: done is
// called exactly once, before ApplyAsync returns or later from another
// goroutine, and must not block. On the leader
// the command joins group commit without a goroutine of its own waiting
// for it (an order stream's acknowledgements are written from the
// goroutine that learns a batch's results); a command the leader cannot
// take (no leader here, or leadership changing) goes the way Apply goes,
// retries included.
func (n *Node) ApplyAsync(ctx context.Context, cmd *fsm.Command, done func(*fsm.Result, error)) {
	retry := func() { go func() { done(n.Apply(ctx, cmd)) }() }
	select {
	case <-n.done:
		done(nil, ErrClosed)
		return
	default:
	}
	if !n.IsLeader() {
		retry()
		return
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) <= 0 {
		retry() // Apply gives it the default bound, or refuses it
		return
	}
	n.stamp(cmd)
	n.batch.submitAsync(ctx, cmd.Type, fsm.Encode(cmd), func(o outcome) {
		if o.err != nil && errors.Is(o.err, errNotApplied) {
			retry() // certainly not applied: Apply finds the leader
			return
		}
		done(o.res, o.err)
	})
}

// stamp sets the fields only the leader may choose (BRIEF rule 1).
func (n *Node) stamp(cmd *fsm.Command) {
	cmd.Time = time.Now().UnixNano()
	if cmd.Type == fsm.TypeCreateSession {
		cmd.Expires = cmd.Time + int64(n.cfg.SessionTTL)
	}
}

func (n *Node) applyLocal(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	n.stamp(cmd)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 0 {
		return nil, fmt.Errorf("%w: %w: deadline passed before submit", errNotApplied, ErrNoLeader)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	return n.batch.submit(ctx, cmd.Type, fsm.Encode(cmd))
}

// forward sends cmd to the leader, batched with other commands this node
// is forwarding (see forward.go).
func (n *Node) forward(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	return n.fwd.forward(ctx, cmd)
}

// leaderHTTP returns the current leader's HTTP address.
func (n *Node) leaderHTTP() (string, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return "", fmt.Errorf("%w: none known to %s", ErrNoLeader, n.cfg.ID)
	}
	// Every forwarded request asks; the member table rarely changes, so
	// the answer is cached while the state machine's member generation
	// (read before the lookup) stays the same.
	gen := n.fsm.MembersGen()
	if c := n.leaderAddr.Load(); c != nil && c.gen == gen && c.id == string(id) {
		return c.addr, nil
	}
	var addr string
	_ = n.fsm.View(func(v *fsm.View) error {
		if na, ok := v.Node(string(id)); ok {
			addr = na.HTTPAddr
		}
		return nil
	})
	if addr == "" {
		return "", fmt.Errorf("%w: leader %s has no recorded HTTP address yet", ErrNoLeader, id)
	}
	n.leaderAddr.Store(&memberAddr{gen: gen, id: string(id), addr: addr})
	return addr, nil
}

// memberAddr is a cached member HTTP address (leaderHTTP).
type memberAddr struct {
	gen      uint64
	id, addr string
}
