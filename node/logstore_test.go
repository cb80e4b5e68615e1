package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// storeRoundTrip writes an entry and the current term, closes the store,
// reopens the dir with no preference and checks both are there and the
// format was kept.
func storeRoundTrip(t *testing.T, dir, want, wantKind string) {
	t.Helper()
	st, kind, err := openLogStore(dir, want, 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("open %q: %v", want, err)
	}
	if kind != wantKind {
		t.Fatalf("open %q: format %s, want %s", want, kind, wantKind)
	}
	if err := st.StoreLogs([]*raft.Log{{Index: 1, Term: 3, Type: raft.LogCommand, Data: []byte("entry")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, kind, err = openLogStore(dir, "", 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer st.Close()
	if kind != wantKind {
		t.Fatalf("reopen: format %s, want the %s the dir holds", kind, wantKind)
	}
	var l raft.Log
	if err := st.GetLog(1, &l); err != nil || string(l.Data) != "entry" || l.Term != 3 {
		t.Fatalf("reopen: entry 1 = %+v, %v", l, err)
	}
	if term, err := st.GetUint64([]byte("CurrentTerm")); err != nil || term != 3 {
		t.Fatalf("reopen: term %d, %v", term, err)
	}
}

func TestLogStoreFormatIsChosenOnceAndKept(t *testing.T) {
	t.Run("new dir defaults to wal", func(t *testing.T) {
		dir := t.TempDir()
		storeRoundTrip(t, dir, "", LogStoreWAL)
		if _, err := os.Stat(filepath.Join(dir, walDir)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("boltdb when asked, kept without the flag", func(t *testing.T) {
		dir := t.TempDir()
		storeRoundTrip(t, dir, LogStoreBoltDB, LogStoreBoltDB)
		if _, err := os.Stat(filepath.Join(dir, boltLogDB)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the other format for an existing log is refused", func(t *testing.T) {
		for _, c := range []struct{ made, asked string }{{LogStoreBoltDB, LogStoreWAL}, {LogStoreWAL, LogStoreBoltDB}} {
			dir := t.TempDir()
			storeRoundTrip(t, dir, c.made, c.made)
			if _, _, err := openLogStore(dir, c.asked, 0, hclog.NewNullLogger()); !errors.Is(err, ErrConfig) {
				t.Fatalf("made %s, asked %s: %v, want ErrConfig", c.made, c.asked, err)
			}
		}
	})
	t.Run("unknown format", func(t *testing.T) {
		if _, _, err := openLogStore(t.TempDir(), "rocksdb", 0, hclog.NewNullLogger()); !errors.Is(err, ErrConfig) {
			t.Fatalf("%v, want ErrConfig", err)
		}
	})
	t.Run("both formats present", func(t *testing.T) {
		dir := t.TempDir()
		storeRoundTrip(t, dir, LogStoreBoltDB, LogStoreBoltDB)
		if err := os.Mkdir(filepath.Join(dir, walDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, _, err := openLogStore(dir, "", 0, hclog.NewNullLogger()); !errors.Is(err, ErrDataDir) {
			t.Fatalf("%v, want ErrDataDir", err)
		}
		if _, err := OpenLogStore(dir); !errors.Is(err, ErrDataDir) {
			t.Fatalf("OpenLogStore: %v, want ErrDataDir", err)
		}
	})
	t.Run("no log to inspect", func(t *testing.T) {
		if _, err := OpenLogStore(t.TempDir()); !errors.Is(err, ErrDataDir) {
			t.Fatalf("%v, want ErrDataDir", err)
		}
	})
}
