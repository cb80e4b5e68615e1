package fsm

import "io"

// SnapshotSyncStep is how many bytes of a snapshot being written (a Raft
// snapshot on the leader, or one a follower receives and restores) may
// wait in the page cache before they are pushed to disk. Written whole
// and fsynced once at the end, a 200 MB snapshot held a concurrent Raft
// log fsync on the same disk for 52–72 ms on the reference machine; in
// 8 MiB steps the log's worst fsync stayed under 8 ms and the snapshot
// took no longer (docs/performance.md, "What changed in session 8").
const SnapshotSyncStep = 8 << 20

// StepSync passes writes to W and calls Sync after every Step bytes, so a
// large file reaches the disk in small steps instead of one long flush
// that stalls every other fsync behind it.
type StepSync struct {
	W    io.Writer
	Sync func() error
	Step int

	pending int // written since the last Sync
}

func (s *StepSync) Write(p []byte) (int, error) {
	n, err := s.W.Write(p)
	s.pending += n
	if err == nil && s.pending >= s.Step {
		s.pending = 0
		err = s.Sync()
	}
	return n, err
}
