package node

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hats-trading/hats/fsm"
)

// TestRestoreRefusesNewerRules: a backup whose state-machine rules are
// newer than this release applies is refused before the data dir is
// touched (a node on it would refuse to open it anyway).
func TestRestoreRefusesNewerRules(t *testing.T) {
	dir := t.TempDir()
	backup := writeBackup(t, filepath.Join(dir, "newer.backup"), map[string]uint64{"applied_index": 7, "rules": fsm.SupportedRules + 1})
	data := filepath.Join(dir, "data")
	_, err := Restore(RestoreConfig{Backup: backup, ID: "r1", DataDir: data, RaftAddr: "127.0.0.1:7000"})
	if !errors.Is(err, fsm.ErrRulesTooNew) || !errors.Is(err, ErrConfig) {
		t.Fatalf("restore of a newer release's backup: %v, want ErrRulesTooNew", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore made the data dir: %v", err)
	}
}

// TestInterruptedRestoreIsRefused: a restore that fails after it began
// writing (here: state.db cannot be put in place) leaves its marker, and
// a node will not start on that dir (it would otherwise bootstrap a new,
// empty cluster); a restore into an empty dir leaves none.
func TestInterruptedRestoreIsRefused(t *testing.T) {
	dir := t.TempDir()
	backup := writeBackup(t, filepath.Join(dir, "state.backup"), map[string]uint64{"applied_index": 7})

	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "state.db"), 0o700); err != nil { // in the way of the restored file
		t.Fatal(err)
	}
	rc := RestoreConfig{Backup: backup, ID: "r1", DataDir: data, RaftAddr: "127.0.0.1:7000"}
	if _, err := Restore(rc); err == nil {
		t.Fatal("restore with state.db in the way succeeded")
	}
	if _, err := os.Stat(filepath.Join(data, restoreMarker)); err != nil {
		t.Fatalf("a failed restore left no marker: %v", err)
	}
	cfg := Config{ID: "r1", DataDir: data, RaftAddr: "127.0.0.1:7000", HTTPAddr: "127.0.0.1:8000"}
	if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "unfinished hats restore") {
		t.Fatalf("start on an interrupted restore: %v, want ErrConfig", err)
	}

	clean := filepath.Join(dir, "clean")
	rc.DataDir = clean
	if _, err := Restore(rc); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(clean, restoreMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished restore left its marker: %v", err)
	}
}

// writeBackup makes a backup file: a new state file with the given meta
// values (big-endian uint64s, as the state machine keeps them).
func writeBackup(t *testing.T, path string, meta map[string]uint64) string {
	t.Helper()
	f, err := fsm.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for k, v := range meta {
			if err := tx.Bucket([]byte("meta")).Put([]byte(k), binary.BigEndian.AppendUint64(nil, v)); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return path
}
