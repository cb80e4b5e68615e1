package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Closing the queue is final: every command push accepted gets its
// outcome (from a batch or from the drain at close), and every push after
// the close is refused, however the two race. An accepted command left
// in the queue after the last drain would never be answered, and an order
// stream would wait for it forever.
func TestCoalescerAnswersEveryCommandItTakesAcrossClose(t *testing.T) {
	for round := range 50 {
		c := newCoalescer(64, 2, 16, maxBatchBytes)
		done := make(chan struct{})
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			c.run(done, func(batch []*pending) {
				for _, p := range batch {
					p.finish(outcome{})
				}
				c.release()
			})
		}()
		var accepted, answered, refused atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 500 {
					p := &pending{notify: func(outcome) { answered.Add(1) }}
					switch err := c.push(context.Background(), done, p); {
					case err == nil:
						accepted.Add(1)
					case errors.Is(err, ErrClosed):
						refused.Add(1)
					default:
						t.Errorf("push: %v", err)
					}
				}
			}()
		}
		deadline := time.Now().Add(10 * time.Second)
		for accepted.Load() < int64(50*(round%8+1)) { // close mid-stream, at varying points
			if time.Now().After(deadline) {
				t.Fatalf("round %d: only %d commands accepted in 10 s", round, accepted.Load())
			}
			time.Sleep(10 * time.Microsecond)
		}
		close(done)
		wg.Wait()
		<-stopped
		if a, n := accepted.Load(), answered.Load(); a != n {
			t.Fatalf("round %d: %d commands accepted, %d answered (%d refused)", round, a, n, refused.Load())
		}
		if err := c.push(context.Background(), done, &pending{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("push after close: %v, want ErrClosed", err)
		}
	}
}
