package node

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hats-trading/hats/fsm"
)

// TestRestoreRefusesNewerRules: a backup whose state-machine rules are
// newer than this release applies is refused before the data dir is
// touched (a node on it would refuse to open it anyway).
func TestRestoreRefusesNewerRules(t *testing.T) {
	dir := t.TempDir()
	backup := filepath.Join(dir, "newer.backup")
	f, err := fsm.Open(backup, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(backup, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		for k, v := range map[string]uint64{"applied_index": 7, "rules": fsm.SupportedRules + 1} {
			if err := meta.Put([]byte(k), binary.BigEndian.AppendUint64(nil, v)); err != nil {
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
	data := filepath.Join(dir, "data")
	_, err = Restore(RestoreConfig{Backup: backup, ID: "r1", DataDir: data, RaftAddr: "127.0.0.1:7000"})
	if !errors.Is(err, fsm.ErrRulesTooNew) || !errors.Is(err, ErrConfig) {
		t.Fatalf("restore of a newer release's backup: %v, want ErrRulesTooNew", err)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore made the data dir: %v", err)
	}
}
