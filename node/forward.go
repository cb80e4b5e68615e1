package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

// Batched forwarding. A follower's Trading Server sends the writes it
// receives to the leader. One request per command would cost the follower
// and the leader far more CPU than the command itself, so commands queued
// behind requests in flight travel together: one request carries up to
// maxBatch encoded commands, the leader submits them all to its group
// commit and answers each with its own outcome. As with group commit,
// nothing waits on purpose: a lone command goes at once.
//
// Requests travel on one persistent forward stream to the leader
// (transport.ForwardStream), opened on first use and replaced when the
// leader moves or the stream breaks; a leader that does not serve forward
// streams gets plain HTTP requests instead.

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
	streams  atomic.Uint64 // forward streams opened
	plain    atomic.Uint64 // batches sent as plain HTTP requests

	smu     sync.Mutex
	stream  *transport.ForwardStream              // to the last leader used; under smu
	retired map[*transport.ForwardStream]struct{} // to former leaders, closing soon; under smu
	closed  bool                                  // under smu: the node is stopping
	// A leader that refused the upgrade (it predates forward streams)
	// gets plain requests until plainUntil, then the upgrade is tried
	// again; under smu.
	plainAddr  string
	plainUntil time.Time
}

// plainRetry is how long a leader that refused a forward stream gets
// plain requests before the next upgrade attempt.
const plainRetry = 10 * time.Second

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
	switch err := fw.q.push(ctx, fw.n.done, p); {
	case errors.Is(err, ErrClosed):
		return nil, ErrClosed
	case err != nil:
		return nil, fmt.Errorf("%w: %w: forward queue full until the deadline", errNotApplied, ErrNoLeader)
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
	fw.smu.Lock()
	fw.closed = true
	if fw.stream != nil {
		_ = fw.stream.Close()
		fw.stream = nil
	}
	for fs := range fw.retired {
		_ = fs.Close()
	}
	fw.retired = nil
	fw.smu.Unlock()
}

// streamTo returns the forward stream to the leader at addr, opening one
// if there is none or the current one has stopped. A stream to a former
// leader is left to finish what it carries and closed after ApplyTimeout.
func (fw *forwarder) streamTo(ctx context.Context, addr, key string) (*transport.ForwardStream, error) {
	fw.smu.Lock()
	defer fw.smu.Unlock()
	if fw.closed {
		return nil, ErrClosed
	}
	if fs := fw.stream; fs != nil {
		select {
		case <-fs.Done():
		default:
			if fs.Addr() == addr {
				return fs, nil
			}
			fw.retire(fs)
		}
		fw.stream = nil
	}
	fs, err := fw.n.peer.OpenForwardStream(ctx, addr, key)
	if err != nil {
		return nil, err
	}
	fw.streams.Add(1)
	fw.stream = fs
	return fs, nil
}

// usePlain reports whether the leader at addr refused a forward stream
// less than plainRetry ago.
func (fw *forwarder) usePlain(addr string) bool {
	fw.smu.Lock()
	defer fw.smu.Unlock()
	return fw.plainAddr == addr && time.Now().Before(fw.plainUntil)
}

// retire lets a stream to a former leader finish what it carries: it is
// closed after ApplyTimeout, or when the node stops. Caller holds smu.
func (fw *forwarder) retire(fs *transport.ForwardStream) {
	if fw.retired == nil {
		fw.retired = map[*transport.ForwardStream]struct{}{}
	}
	fw.retired[fs] = struct{}{}
	time.AfterFunc(fw.n.cfg.ApplyTimeout, func() {
		_ = fs.Close()
		fw.smu.Lock()
		delete(fw.retired, fs)
		fw.smu.Unlock()
	})
}

// apply sends one encoded batch to the leader at addr, on the forward
// stream, or as a plain request to a leader without forward streams. Its
// errors follow transport.Peer.ForwardApplyBatch's.
func (fw *forwarder) apply(ctx context.Context, addr, key string, batch []byte) ([]byte, error) {
	if fw.usePlain(addr) {
		fw.plain.Add(1)
		return fw.n.peer.ForwardApplyBatch(ctx, addr, key, batch)
	}
	fs, err := fw.streamTo(ctx, addr, key)
	var ae *transport.APIError
	switch {
	case err == nil:
		return fs.Apply(ctx, batch)
	case errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed):
		fw.smu.Lock()
		fw.plainAddr, fw.plainUntil = addr, time.Now().Add(plainRetry)
		fw.smu.Unlock()
		fw.plain.Add(1)
		return fw.n.peer.ForwardApplyBatch(ctx, addr, key, batch)
	case errors.Is(err, ErrClosed):
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	return nil, err
}

// send makes one request for the batch, bounded by ctx and ApplyTimeout,
// and hands each member its outcome.
func (fw *forwarder) send(ctx context.Context, batch []*pending) {
	n := fw.n
	fail := func(err error) {
		for _, p := range batch {
			p.finish(outcome{err: err})
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
	reply, err := fw.apply(ctx, addr, key, fsm.EncodeBatch(parts))
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
		p.finish(outs[i])
	}
}

// ForwardStats counts this node's forwarding to leaders.
type ForwardStats struct {
	Requests uint64 // batches sent
	Commands uint64 // commands in them
	Streams  uint64 // forward streams opened
	Plain    uint64 // batches sent as plain HTTP requests (a leader without forward streams)
}

// ForwardStats reports this node's forwarding counts so far.
func (n *Node) ForwardStats() ForwardStats {
	return ForwardStats{Requests: n.fwd.requests.Load(), Commands: n.fwd.commands.Load(),
		Streams: n.fwd.streams.Load(), Plain: n.fwd.plain.Load()}
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
	if len(cmds) == 1 {
		// A lone command takes submit's shortcut to Raft when nothing is
		// queued, as one sent to the leader directly would (and, like
		// it, then waits for Raft's answer rather than for ctx: the
		// follower's own deadline bounds what its client waits).
		n.stamp(cmds[0])
		res, err := n.batch.submit(ctx, cmds[0].Type, fsm.Encode(cmds[0]))
		return encodeForwardReply([]outcome{{res: res, err: err}}), nil
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
