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

type pending struct {
	data []byte
	typ  fsm.Type
	done chan outcome
}

type outcome struct {
	res *fsm.Result
	err error
}

type batcher struct {
	n        *Node
	in       chan *pending
	inflight chan struct{}
	maxBatch int
}

func newBatcher(n *Node, maxBatch int) *batcher {
	if maxBatch <= 0 || maxBatch > fsm.MaxBatch {
		maxBatch = 512
	}
	return &batcher{n: n, in: make(chan *pending, batchQueue), inflight: make(chan struct{}, MaxInflightBatches), maxBatch: maxBatch}
}

// submit queues an encoded, stamped command and waits for its outcome.
// When nothing is queued and an entry slot is free, the command goes to
// Raft from the caller's goroutine as an entry of its own: a lone
// command then skips the batcher's two goroutine hand-offs.
func (b *batcher) submit(ctx context.Context, typ fsm.Type, data []byte) (*fsm.Result, error) {
	if len(b.in) == 0 {
		select {
		case b.inflight <- struct{}{}:
			p := &pending{data: data, typ: typ, done: make(chan outcome, 1)}
			b.await(b.n.raft.Apply(data, b.n.cfg.ApplyTimeout), []*pending{p})
			<-b.inflight
			select {
			case o := <-p.done:
				return o.res, o.err
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s: deadline passed while committing", ErrOutcomeUnknown, typ)
			}
		default:
		}
	}
	o := b.enqueue(ctx, typ, data)()
	return o.res, o.err
}

// enqueue queues an encoded, stamped command and returns a function that
// waits for its outcome (until ctx ends), so a caller can queue several
// commands before waiting for any.
func (b *batcher) enqueue(ctx context.Context, typ fsm.Type, data []byte) func() outcome {
	p := &pending{data: data, typ: typ, done: make(chan outcome, 1)}
	select {
	case b.in <- p:
	case <-ctx.Done():
		err := fmt.Errorf("%w: %w: queue full until the deadline", errNotApplied, ErrNoLeader)
		return func() outcome { return outcome{err: err} }
	case <-b.n.done:
		return func() outcome { return outcome{err: ErrClosed} }
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
	for {
		var first *pending
		select {
		case first = <-b.in:
		case <-b.n.done:
			b.failQueued()
			return
		}
		// Wait for room in flight; commands arriving meanwhile join.
		select {
		case b.inflight <- struct{}{}:
		case <-b.n.done:
			first.done <- outcome{err: ErrClosed}
			b.failQueued()
			return
		}
		batch := []*pending{first}
	drain:
		for len(batch) < b.maxBatch {
			select {
			case p := <-b.in:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		b.dispatch(batch)
	}
}

func (b *batcher) failQueued() {
	for {
		select {
		case p := <-b.in:
			p.done <- outcome{err: ErrClosed}
		default:
			return
		}
	}
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
	go func() {
		defer func() { <-b.inflight }()
		b.await(f, batch)
	}()
}

// await waits for an entry's fate and hands each member its outcome.
func (b *batcher) await(f raft.ApplyFuture, batch []*pending) {
	if err := f.Error(); err != nil {
		for _, p := range batch {
			p.done <- outcome{err: applyError(p.typ, err)}
		}
		return
	}
	switch r := f.Response().(type) {
	case *fsm.Result:
		batch[0].done <- outcome{res: r}
	case *fsm.BatchResult:
		for i, p := range batch {
			if i < len(r.Results) && r.Results[i] != nil {
				p.done <- outcome{res: r.Results[i]}
			} else {
				p.done <- outcome{err: fmt.Errorf("%w: %s: no result from state machine", ErrOutcomeUnknown, p.typ)}
			}
		}
	default:
		for _, p := range batch {
			p.done <- outcome{err: fmt.Errorf("%w: %s: no result from state machine", ErrOutcomeUnknown, p.typ)}
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
