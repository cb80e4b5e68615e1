package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

const tinySegment = 4096

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 1000)}
}

// sealedTail makes a WAL in dir whose tail segment is sealed but never
// rotated, as a stop right after the append that filled it leaves it:
// appends with Close and reopen in between until raft-wal itself refuses
// one with ErrSealed. It returns the last index stored.
func sealedTail(t *testing.T, dir string) uint64 {
	t.Helper()
	w, err := wal.Open(dir, wal.WithSegmentSize(tinySegment))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()
	for i := uint64(1); i <= 300; i++ {
		err := w.StoreLogs([]*raft.Log{entry(i)})
		if errors.Is(err, wal.ErrSealed) {
			return i - 1
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		if w, err = wal.Open(dir, wal.WithSegmentSize(tinySegment)); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("raft-wal never left a sealed tail: the workaround may no longer be needed")
	return 0
}

func checkEntries(t *testing.T, s raft.LogStore, last uint64) {
	t.Helper()
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("last index %d (%v), want %d", got, err, last)
	}
	for i := uint64(1); i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if want := entry(i); l.Term != want.Term || !bytes.Equal(l.Data, want.Data) {
			t.Fatalf("entry %d: term %d, %d bytes of %d", i, l.Term, len(l.Data), l.Data[0])
		}
	}
}

// TestWALSealedTailRecovers: a node whose Raft log was left with a sealed
// tail appends again (the repair starts a new tail segment), every entry
// stays readable, and the log survives a reopen.
func TestWALSealedTailRecovers(t *testing.T) {
	dir := t.TempDir()
	last := sealedTail(t, dir)
	s, err := openWAL(dir, tinySegment, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := last + 1; i <= last+20; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatalf("append %d after a sealed tail: %v", i, err)
		}
	}
	checkEntries(t, s, last+20)
	if _, err := os.Stat(filepath.Join(dir, tailRepairJournal)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished repair left its journal: %v", err)
	}
	s.Close()
	if s, err = openWAL(dir, tinySegment, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, last+20)
}

// TestWALTailRepairSurvivesAStop: a stop after the repair took the last
// entry out and before it put it back loses nothing: the next open puts
// it back from the journal.
func TestWALTailRepairSurvivesAStop(t *testing.T) {
	dir := t.TempDir()
	last := sealedTail(t, dir)
	w, err := wal.Open(dir, wal.WithSegmentSize(tinySegment))
	if err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := w.GetLog(last, &l); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(&l)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tailRepairJournal), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(last, last); err != nil {
		t.Fatal(err)
	}
	w.Close() // the stop
	s, err := openWAL(dir, tinySegment, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkEntries(t, s, last)
	if err := s.StoreLogs([]*raft.Log{entry(last + 1)}); err != nil {
		t.Fatalf("append after the journaled repair: %v", err)
	}
	checkEntries(t, s, last+1)
	if _, err := os.Stat(filepath.Join(dir, tailRepairJournal)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal left after it was replayed: %v", err)
	}
}
