package node

import (
	"sync"

	"github.com/hashicorp/raft"
)

// leaderWatch tells waiting writes the moment the leader changes. A write
// that found no usable leader (an election is under way, or the leader it
// forwarded to died) would otherwise sleep out a backoff step after the
// new leader is already known; during a failover that sleep, not the
// election, was most of the gap clients saw.
type leaderWatch struct {
	mu sync.Mutex
	ch chan struct{} // closed and replaced at every leader change
}

func newLeaderWatch() *leaderWatch { return &leaderWatch{ch: make(chan struct{})} }

// changed returns a channel closed at the next leader change.
func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *leaderWatch) signal() {
	w.mu.Lock()
	close(w.ch)
	w.ch = make(chan struct{})
	w.mu.Unlock()
}

// observeLeaders registers a Raft observer of leader changes; its
// observations queue (a few, then are dropped: one pending is enough to
// wake every waiter) until watchLeaderChanges runs.
func (n *Node) observeLeaders() {
	n.leaderObs = make(chan raft.Observation, 16)
	n.leaderObserver = raft.NewObserver(n.leaderObs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.leaderObserver)
}

// watchLeaderChanges signals n.leaders at every leader observation Raft
// makes (a new leader, or none).
func (n *Node) watchLeaderChanges() {
	defer n.wg.Done()
	defer n.raft.DeregisterObserver(n.leaderObserver)
	for {
		select {
		case <-n.done:
			return
		case <-n.leaderObs:
			n.leaders.signal()
		}
	}
}
