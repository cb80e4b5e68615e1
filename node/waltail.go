package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// raft-wal (v0.4.2, and its main branch as of this writing) seals a full
// tail segment inside the append that fills it and rotates to a new tail
// in the background. A process that stops in between (a crash, or a
// Close that wins the race with the rotation) leaves metadata naming the
// sealed file as the open tail; reopened, every append fails with "segment
// is sealed", for good: the node can never follow its leader again.
// (Reproduced by TestWALSealedTailRecovers; seen in a chaos campaign.)
//
// walStore repairs that on the first append that fails so. The WAL's only
// way to start a new tail is a tail truncation, so the repair deletes the
// last entry (which starts a new tail segment at its index) and appends it
// again. That entry may be one this node acknowledged to a leader, so it
// must not be lost if the process dies in between: it is first written to
// a journal file (fsynced), and openWAL puts it back from there.
type walStore struct {
	*wal.WAL
	dir string
	log hclog.Logger
}

// tailRepairJournal names the journal of an unfinished repair.
const tailRepairJournal = "tail-repair.json"

func openWAL(dir string, segmentSize int, log hclog.Logger) (*walStore, error) {
	w, err := wal.Open(dir, wal.WithLogger(log), wal.WithSegmentSize(max(segmentSize, 0)))
	if err != nil {
		return nil, err
	}
	s := &walStore{WAL: w, dir: dir, log: log}
	if err := s.finishRepair(); err != nil {
		w.Close()
		return nil, err
	}
	return s, nil
}

// StoreLogs implements raft.LogStore.
func (s *walStore) StoreLogs(logs []*raft.Log) error {
	err := s.WAL.StoreLogs(logs)
	if !errors.Is(err, wal.ErrSealed) {
		return err
	}
	s.log.Warn("the Raft log's tail segment was sealed but never rotated (a stop right after it filled); starting a new one")
	if rerr := s.repairTail(); rerr != nil {
		return fmt.Errorf("%w; repairing the sealed tail: %v", err, rerr)
	}
	return s.WAL.StoreLogs(logs)
}

// StoreLog implements raft.LogStore.
func (s *walStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// repairTail starts a new tail segment by deleting the last entry and
// appending it again, journaled so a stop in between loses nothing.
func (s *walStore) repairTail() error {
	last, err := s.LastIndex()
	if err != nil || last == 0 {
		return fmt.Errorf("last index %d: %v", last, err)
	}
	var l raft.Log
	if err := s.GetLog(last, &l); err != nil {
		return err
	}
	data, err := json.Marshal(&l)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(s.dir, tailRepairJournal), data, 0o600); err != nil {
		return err
	}
	if err := s.DeleteRange(last, last); err != nil {
		return err
	}
	return s.finishRepair()
}

// finishRepair puts back the entry a journaled repair took out, if it is
// not in the log, and drops the journal.
func (s *walStore) finishRepair() error {
	path := filepath.Join(s.dir, tailRepairJournal)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var l raft.Log
	if err := json.Unmarshal(data, &l); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	switch {
	case last == l.Index-1:
		if err := s.WAL.StoreLogs([]*raft.Log{&l}); err != nil {
			return fmt.Errorf("put back entry %d after a tail repair: %w", l.Index, err)
		}
		s.log.Info("Raft log tail repaired", "index", l.Index)
	case last < l.Index-1:
		return fmt.Errorf("%s holds entry %d but the log ends at %d", path, l.Index, last)
	}
	return removeSynced(path)
}
