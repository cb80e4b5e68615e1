package node

import "testing"

// A waiter holding the channel from before a change is released by it;
// one taken after the change waits for the next.
func TestLeaderWatchSignalsEachChange(t *testing.T) {
	w := newLeaderWatch()
	before := w.changed()
	select {
	case <-before:
		t.Fatal("released before any change")
	default:
	}
	w.signal()
	select {
	case <-before:
	default:
		t.Fatal("a change did not release the waiter")
	}
	after := w.changed()
	select {
	case <-after:
		t.Fatal("a waiter taken after the change was released by it")
	default:
	}
	w.signal()
	<-after
}
