package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
)

// Group commit. Commands that reach the leader while earlier ones are being
// replicated are packed into one Raft entry (fsm.TypeBatch), so the cost of
// a log append, a replication round and an fsync is shared by the whole
// batch. Nothing waits on purpose: a lone command goes out at once as a
// plain entry; batches form only when commands queue up behind work in
// flight, which is exactly when sharing pays. Each command still gets its
// own result, and the entry's fate (applied, certainly not applied, or
// unknown) is every member's fate.

const (
	// MaxInflightBatches bounds entries handed to Raft and not yet
	// answered; more commands wait in the queue and join the next batch.
	MaxInflightBatches = 4
	batchQueue         = 8192
)

type batcher struct {
	n *Node
	q *coalescer
}

func newBatcher(n *Node, maxBatch int) *batcher {
	return &batcher{n: n, q: newCoalescer(batchQueue, MaxInflightBatches, maxBatch, maxBatchBytes)}
}

// submit queues an encoded, stamped command and waits for its outcome.
// When nothing is queued and an entry slot is free, the command goes to
// Raft from the caller's goroutine as an entry of its own: a lone
// command then skips the batcher's two goroutine hand-offs.
func (b *batcher) submit(ctx context.Context, typ fsm.Type, data []byte) (*fsm.Result, error) {
	if b.q.takeAlone() {
		p := newPending(typ, data)
		b.await(b.n.raft.Apply(data, b.n.cfg.ApplyTimeout), []*pending{p}, b.q.release)
		o := <-p.done // await has answered
		return o.res, o.err
	}
	o := b.enqueue(ctx, typ, data)()
	return o.res, o.err
}

// submitAsync is submit answering through notify instead of waiting:
// notify is called once, from the goroutine that learns the outcome (for
// a batch, the one that waited for its entry), so it must not block. The
// outcome comes when the entry is applied or Raft gives up on it (lost
// leadership, shutdown); ctx bounds only the wait for room in the queue.
func (b *batcher) submitAsync(ctx context.Context, typ fsm.Type, data []byte, notify func(outcome)) {
	p := &pending{data: data, typ: typ, notify: notify}
	if b.q.takeAlone() {
		f := b.n.raft.Apply(data, b.n.cfg.ApplyTimeout)
		go b.await(f, []*pending{p}, b.q.release)
		return
	}
	if err := b.q.push(ctx, b.n.done, p); err != nil {
		notify(outcome{err: pushError(err)})
	}
}

// pushError is the outcome of a command the queue did not take.
func pushError(err error) error {
	if errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w: queue full until the deadline", errNotApplied, ErrNoLeader)
}

// enqueue queues an encoded, stamped command and returns a function that
// waits for its outcome (until ctx ends), so a caller can queue several
// commands before waiting for any.
func (b *batcher) enqueue(ctx context.Context, typ fsm.Type, data []byte) func() outcome {
	p := newPending(typ, data)
	if err := b.q.push(ctx, b.n.done, p); err != nil {
		err = pushError(err)
		return func() outcome { return outcome{err: err} }
	}
	return func() outcome {
		select {
		case o := <-p.done:
			return o
		case <-ctx.Done():
			// Queued or in flight: it may still be applied.
			return outcome{err: fmt.Errorf("%w: %s: deadline passed while committing", ErrOutcomeUnknown, typ)}
		}
	}
}

func (b *batcher) run() {
	defer b.n.wg.Done()
	b.q.run(b.n.done, b.dispatch)
}

// dispatch hands one entry to Raft and answers its members when it is
// applied, without blocking the next batch.
func (b *batcher) dispatch(batch []*pending) {
	var data []byte
	if len(batch) == 1 {
		data = batch[0].data
	} else {
		parts := make([][]byte, len(batch))
		for i, p := range batch {
			parts[i] = p.data
		}
		data = fsm.EncodeBatch(parts)
	}
	f := b.n.raft.Apply(data, b.n.cfg.ApplyTimeout)
	go b.await(f, batch, b.q.release)
}

// await waits for an entry's fate, frees its in-flight slot (release),
// and hands each member its outcome: the next entry can go to Raft while
// the members' callbacks run (an order stream's encode their
// acknowledgements).
func (b *batcher) await(f raft.ApplyFuture, batch []*pending, release func()) {
	err := f.Error()
	release()
	if err != nil {
		for _, p := range batch {
			p.finish(outcome{err: applyError(p.typ, err)})
		}
		return
	}
	switch r := f.Response().(type) {
	case *fsm.Result:
		batch[0].finish(outcome{res: r})
	case *fsm.BatchResult:
		for i, p := range batch {
			if i < len(r.Results) && r.Results[i] != nil {
				p.finish(outcome{res: r.Results[i]})
			} else {
				p.finish(outcome{err: fmt.Errorf("%w: %s: no result from state machine", ErrOutcomeUnknown, p.typ)})
			}
		}
	default:
		for _, p := range batch {
			p.finish(outcome{err: fmt.Errorf("%w: %s: no result from state machine", ErrOutcomeUnknown, p.typ)})
		}
	}
}

// applyError sorts Raft's errors into certainly-not-applied and unknown.
func applyError(typ fsm.Type, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w: %v", errNotApplied, ErrNoLeader, err)
	default: // ErrLeadershipLost, ErrRaftShutdown: it may still commit
		return fmt.Errorf("%w: %s: %v", ErrOutcomeUnknown, typ, err)
	}
}
