package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Batched forwarding. A follower's Trading Server sends the writes it
// receives to the leader. One HTTP request per command would cost the
// follower and the leader far more CPU than the command itself, so
// commands queued behind requests in flight travel together: one request
// carries up to maxBatch encoded commands, the leader submits them all to
// its group commit and answers each with its own outcome. As with group
// commit, nothing waits on purpose: a lone command goes at once.

const (
	maxInflightForwards = 4
	forwardQueue        = 8192
)

// Outcome kinds of one command in a forwarded batch's reply.
const (
	fwdOK         byte = iota // payload: fsm.EncodeResult
	fwdNotApplied             // certainly not applied; payload: message
	fwdUnknown                // may have been applied; payload: message
)

type forwarder struct {
	n        *Node
	q        *coalescer
	requests atomic.Uint64 // batches sent to a leader
	commands atomic.Uint64 // commands in them
}

func newForwarder(n *Node, maxBatch int) *forwarder {
	return &forwarder{n: n, q: newCoalescer(forwardQueue, maxInflightForwards, maxBatch, maxBatchBytes)}
}

// forward queues one command for the leader and waits for its outcome.
// Errors follow Apply's rules: errNotApplied means it is safe to retry.
func (fw *forwarder) forward(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	p := newPending(cmd.Type, fsm.Encode(cmd))
	if fw.q.takeAlone() {
		// Nothing waits and a request slot is free: send it from here.
		fw.send(ctx, []*pending{p})
		fw.q.release()
		o := <-p.done // send has answered
		return o.res, o.err
	}
	select {
	case fw.q.in <- p:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w: forward queue full until the deadline", errNotApplied, ErrNoLeader)
	case <-fw.n.done:
		return nil, ErrClosed
	}
	select {
	case o := <-p.done:
		return o.res, o.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: deadline passed while forwarding to the leader", ErrOutcomeUnknown, cmd.Type)
	}
}

func (fw *forwarder) run() {
	defer fw.n.wg.Done()
	fw.q.run(fw.n.done, func(batch []*pending) {
		go func() {
			defer fw.q.release()
			fw.send(context.Background(), batch)
		}()
	})
}

// send makes one request for the batch, bounded by ctx and ApplyTimeout,
// and hands each member its outcome.
func (fw *forwarder) send(ctx context.Context, batch []*pending) {
	n := fw.n
	fail := func(err error) {
		for _, p := range batch {
			p.done <- outcome{err: err}
		}
	}
	addr, err := n.leaderHTTP()
	if err != nil {
		fail(fmt.Errorf("%w: %w", errNotApplied, err))
		return
	}
	key := n.ClusterKey()
	if key == "" {
		fail(fmt.Errorf("%w: %w: cluster records not applied here yet", errNotApplied, ErrNoLeader))
		return
	}
	parts := make([][]byte, len(batch))
	for i, p := range batch {
		parts[i] = p.data
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	fw.requests.Add(1)
	fw.commands.Add(uint64(len(batch)))
	reply, err := n.peer.ForwardApplyBatch(ctx, addr, key, fsm.EncodeBatch(parts))
	if err != nil {
		var ae *transport.APIError
		switch {
		case errors.Is(err, transport.ErrUnavailable) && !errors.As(err, &ae): // dial failed: never sent
			fail(fmt.Errorf("%w: %w", errNotApplied, err))
		case errors.As(err, &ae) && (ae.Code == transport.CodeNoLeader || ae.Code == transport.CodeForbidden):
			fail(fmt.Errorf("%w: %w", errNotApplied, err))
		case errors.As(err, &ae) && ae.Code == transport.CodeOutcomeUnknown:
			fail(fmt.Errorf("%w: via leader %s: %s", ErrOutcomeUnknown, addr, ae.Message))
		case errors.As(err, &ae):
			fail(err)
		default:
			fail(fmt.Errorf("%w: forwarding %d commands to %s: %v", ErrOutcomeUnknown, len(batch), addr, err))
		}
		return
	}
	outs, err := decodeForwardReply(reply, len(batch))
	if err != nil {
		fail(fmt.Errorf("%w: reply from %s: %v", ErrOutcomeUnknown, addr, err))
		return
	}
	for i, p := range batch {
		p.done <- outs[i]
	}
}

// ForwardStats reports how many batched requests this node has sent to a
// leader and how many commands they carried.
func (n *Node) ForwardStats() (requests, commands uint64) {
	return n.fwd.requests.Load(), n.fwd.commands.Load()
}

// ApplyForwardedBatch implements transport.Backend: the leader's side of a
// forwarded batch. Every command goes to group commit at once; the reply
// holds one outcome per command, in order.
func (n *Node) ApplyForwardedBatch(ctx context.Context, data []byte) ([]byte, error) {
	cmds, err := fsm.DecodeBatch(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", transport.ErrBadRequest, err)
	}
	if !n.IsLeader() {
		return nil, fmt.Errorf("%w: %s is not the leader", ErrNoLeader, n.cfg.ID)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		defer cancel()
	}
	waits := make([]func() outcome, len(cmds))
	for i, cmd := range cmds {
		n.stamp(cmd)
		waits[i] = n.batch.enqueue(ctx, cmd.Type, fsm.Encode(cmd))
	}
	outs := make([]outcome, len(cmds))
	for i, w := range waits {
		outs[i] = w()
	}
	return encodeForwardReply(outs), nil
}

// encodeForwardReply writes, per command, its kind and a length-prefixed
// payload.
func encodeForwardReply(outs []outcome) []byte {
	b := binary.AppendUvarint(nil, uint64(len(outs)))
	for _, o := range outs {
		var kind byte
		var payload []byte
		switch {
		case o.err == nil:
			kind, payload = fwdOK, fsm.EncodeResult(o.res)
		case errors.Is(o.err, errNotApplied) || errors.Is(o.err, ErrClosed):
			kind, payload = fwdNotApplied, []byte(o.err.Error())
		default:
			kind, payload = fwdUnknown, []byte(o.err.Error())
		}
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(payload)))
		b = append(b, payload...)
	}
	return b
}

var errBadForwardReply = errors.New("malformed forwarded-batch reply")

func decodeForwardReply(b []byte, want int) ([]outcome, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n != uint64(want) {
		return nil, fmt.Errorf("%w: %d outcomes for %d commands", errBadForwardReply, n, want)
	}
	b = b[k:]
	outs := make([]outcome, 0, want)
	for range want {
		if len(b) < 1 {
			return nil, fmt.Errorf("%w: truncated", errBadForwardReply)
		}
		kind := b[0]
		l, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < l {
			return nil, fmt.Errorf("%w: truncated", errBadForwardReply)
		}
		payload := b[1+k : 1+k+int(l)]
		b = b[1+k+int(l):]
		switch kind {
		case fwdOK:
			res, err := fsm.DecodeResult(payload)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", errBadForwardReply, err)
			}
			outs = append(outs, outcome{res: res})
		case fwdNotApplied:
			outs = append(outs, outcome{err: fmt.Errorf("%w: %w: leader: %s", errNotApplied, ErrNoLeader, payload)})
		case fwdUnknown:
			outs = append(outs, outcome{err: fmt.Errorf("%w: leader: %s", ErrOutcomeUnknown, payload)})
		default:
			return nil, fmt.Errorf("%w: outcome kind %d", errBadForwardReply, kind)
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadForwardReply, len(b))
	}
	return outs, nil
}
