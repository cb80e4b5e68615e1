package node

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
)

// steppedSnapshots is Raft's file snapshot store whose sinks push the
// snapshot to disk in fsm.SnapshotSyncStep steps while it is written (a
// leader's own snapshots and those a follower receives), instead of
// leaving it all to the one fsync in the sink's Close: that flush held
// the Raft log's fsyncs, and so every commit, for tens of milliseconds.
//
// The file sink does not expose its file, so the steps fsync the state
// file through a second descriptor, found by the store's layout
// (<dir>/snapshots/<id>.tmp/state.bin in hashicorp/raft v1.7). If that
// layout changes the snapshot is still written and synced whole by Close,
// as before; a warning says so and TestSnapshotSinkSyncsInSteps fails.
type steppedSnapshots struct {
	*raft.FileSnapshotStore
	dir    string
	log    *slog.Logger
	steps  atomic.Int64 // step fsyncs done, for tests
	warned atomic.Bool  // a sink could not step, for tests
}

func newSteppedSnapshots(dataDir string, retain int, rlog hclog.Logger, log *slog.Logger) (*steppedSnapshots, error) {
	fs, err := raft.NewFileSnapshotStoreWithLogger(dataDir, retain, rlog)
	if err != nil {
		return nil, err
	}
	return &steppedSnapshots{FileSnapshotStore: fs, dir: filepath.Join(dataDir, "snapshots"), log: log}, nil
}

// Create opens a snapshot sink that syncs as it goes.
func (s *steppedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	ss := &steppedSink{SnapshotSink: sink, store: s, path: filepath.Join(s.dir, sink.ID()+".tmp", "state.bin")}
	ss.w = fsm.StepSync{W: sink, Sync: ss.sync, Step: fsm.SnapshotSyncStep}
	return ss, nil
}

type steppedSink struct {
	raft.SnapshotSink
	store *steppedSnapshots
	path  string
	w     fsm.StepSync
	f     *os.File // the state file, opened at the first step
	off   bool     // the state file was not found: no steps
}

func (s *steppedSink) Write(p []byte) (int, error) { return s.w.Write(p) }

func (s *steppedSink) sync() error {
	if s.off {
		return nil
	}
	if s.f == nil {
		f, err := os.OpenFile(s.path, os.O_WRONLY, 0)
		if err != nil {
			// Snapshots are rare, so each one that cannot step says so.
			s.off = true
			s.store.warned.Store(true)
			s.store.log.Warn("snapshot written without intermediate syncs: cannot open its state file", "path", s.path, "err", err)
			return nil
		}
		s.f = f
	}
	// fsync flushes the file's dirty pages whichever descriptor wrote
	// them. A failure here is the disk's: the snapshot must fail.
	if err := s.f.Sync(); err != nil {
		return err
	}
	s.store.steps.Add(1)
	return nil
}

// closeFile closes the step descriptor. It never wrote, and the sink's
// own Close fsyncs what counts, so a failure here is logged, not returned:
// returning it would tell Raft a snapshot failed that the store has
// already put in place.
func (s *steppedSink) closeFile() {
	if s.f == nil {
		return
	}
	if err := s.f.Close(); err != nil {
		s.store.log.Warn("closing a snapshot's step descriptor", "path", s.path, "err", err)
	}
	s.f = nil
}

func (s *steppedSink) Close() error {
	s.closeFile()
	return s.SnapshotSink.Close()
}

func (s *steppedSink) Cancel() error {
	s.closeFile()
	return s.SnapshotSink.Cancel()
}
