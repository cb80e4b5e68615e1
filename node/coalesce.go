package node

import (
	"context"
	"sync"

	"github.com/hats-trading/hats/fsm"
)

// pending is one command waiting in a coalescing queue (group commit on
// the leader, forwarding on a follower) for its outcome.
type pending struct {
	data []byte
	typ  fsm.Type
	done chan outcome
	// notify, when set, is called with the outcome instead of sending it
	// on done (submitAsync): from the goroutine that learns it, so it
	// must not block.
	notify func(outcome)
}

type outcome struct {
	res *fsm.Result
	err error
}

func newPending(typ fsm.Type, data []byte) *pending {
	return &pending{data: data, typ: typ, done: make(chan outcome, 1)}
}

// finish hands p its outcome.
func (p *pending) finish(o outcome) {
	if p.notify != nil {
		p.notify(o)
		return
	}
	p.done <- o
}

// maxBatchBytes stops a batch (a Raft entry, or a forwarding request)
// from growing past this size.
const maxBatchBytes = 8 << 20

// coalescer is the queue both group commit (batch.go) and forwarding
// (forward.go) share: commands queue while up to a bounded number of
// batches are in flight, and each new batch takes everything queued, up
// to a count and a size. Nothing waits on purpose: a lone command forms a
// batch of one at once.
type coalescer struct {
	in       chan *pending
	inflight chan struct{}
	maxBatch int
	maxBytes int // a batch stops growing past this many bytes
	// mu makes closing final: push holds it shared while it sends, and
	// failQueued takes it whole to mark the queue closed before the last
	// drain, so no command lands in the queue after that drain (its
	// outcome would never come).
	mu     sync.RWMutex
	closed bool
}

func newCoalescer(queue, inflight, maxBatch, maxBytes int) *coalescer {
	if maxBatch <= 0 || maxBatch > fsm.MaxBatch {
		maxBatch = 512
	}
	return &coalescer{in: make(chan *pending, queue), inflight: make(chan struct{}, inflight), maxBatch: maxBatch, maxBytes: maxBytes}
}

// push queues p. It returns ErrClosed once the queue has closed (done
// is closed), or ctx's error if ctx ends while the queue is full; either
// way p was not queued.
func (c *coalescer) push(ctx context.Context, done <-chan struct{}, p *pending) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	select {
	case c.in <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrClosed
	}
}

// takeAlone reserves an in-flight slot for a command nobody is queued
// ahead of, so the caller can send it itself (skipping the hand-offs to
// run's goroutine and the dispatcher's). The caller must release the slot.
func (c *coalescer) takeAlone() bool {
	if len(c.in) != 0 {
		return false
	}
	select {
	case c.inflight <- struct{}{}:
		return true
	default:
		return false
	}
}

// release frees an in-flight slot.
func (c *coalescer) release() { <-c.inflight }

// run forms batches until done closes and hands each to dispatch, which
// owns one in-flight slot and must release it. Commands still queued at
// the end fail with ErrClosed.
func (c *coalescer) run(done <-chan struct{}, dispatch func([]*pending)) {
	for {
		var first *pending
		select {
		case first = <-c.in:
		case <-done:
			c.failQueued()
			return
		}
		// Wait for room in flight; commands arriving meanwhile join.
		select {
		case c.inflight <- struct{}{}:
		case <-done:
			first.finish(outcome{err: ErrClosed})
			c.failQueued()
			return
		}
		batch := []*pending{first}
		size := len(first.data)
	drain:
		for len(batch) < c.maxBatch && size < c.maxBytes {
			select {
			case p := <-c.in:
				batch = append(batch, p)
				size += len(p.data)
			default:
				break drain
			}
		}
		dispatch(batch)
	}
}

func (c *coalescer) failQueued() {
	c.mu.Lock() // pushes under way see done closed and leave, or have queued
	c.closed = true
	c.mu.Unlock()
	for {
		select {
		case p := <-c.in:
			p.finish(outcome{err: ErrClosed})
		default:
			return
		}
	}
}
