package fsm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestRestoreBackupKeepsTradersDropsCluster: a restored state keeps the
// accounts and the applied index, takes RestoredTerm, and loses the old
// cluster's key and member records; a restore that died and left its
// temporary file does not block the next one; a file that is not a state
// file is refused.
func TestRestoreBackupKeepsTradersDropsCluster(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "state.db")
	f, err := Open(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 3, now: t0}
	wantCode(t, h.apply1(&Command{Type: TypeInitCluster, ClusterKey: "old-key"}), CodeOK)
	wantCode(t, h.apply1(&Command{Type: TypeSetNode, NodeID: "n1", RaftAddr: "10.0.0.1:7000", HTTPAddr: "10.0.0.1:8080"}), CodeOK)
	acct := h.register("keeper")
	wantCode(t, h.apply1(deposit(acct, 12345)), CodeOK)
	index := f.AppliedIndex()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(dst+".restore", []byte("left by a restore that died"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := RestoreBackup(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if info.AppliedIndex != index || info.Accounts < 1 {
		t.Fatalf("restore info %+v, want index %d", info, index)
	}
	r, err := Open(dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.AppliedIndex() != index {
		t.Fatalf("restored applied index %d, want %d", r.AppliedIndex(), index)
	}
	err = r.View(func(v *View) error {
		if v.ClusterKey() != "" {
			t.Errorf("restored state kept the cluster key %q", v.ClusterKey())
		}
		if _, ok := v.Node("n1"); ok {
			t.Error("restored state kept the old member record of n1")
		}
		a, ok := v.Account(acct)
		if !ok || a.Cash != 12345 {
			t.Errorf("restored account %+v (found %v), want cash 12345", a, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a state file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreBackup(junk, filepath.Join(t.TempDir(), "state.db")); !errors.Is(err, ErrBackup) {
		t.Fatalf("restore of junk: %v, want ErrBackup", err)
	}
}
