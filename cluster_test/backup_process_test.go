package cluster_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI_BackupRestore: the operator's path with real processes.
// `hats cluster backup --out FILE` writes a checked backup of the leader
// (never over an existing file); after the whole cluster is gone, `hats
// restore --from FILE` makes an empty data dir the first node of a new
// cluster holding it, that node starts as a plain `hats node`,
// two fresh nodes join it, and the trader logs in with the old password
// and finds the balance the survivor of a lost quorum held, including a
// deposit made after the cluster's only earlier snapshot.
func TestCLI_BackupRestore(t *testing.T) {
	pc := NewProcCluster(t, 3)
	e := newCLIEnv(t, pc)
	e.ok("vault-pass-1\n", "trade", "register", "dora", "--password-stdin")
	e.ok("vault-pass-1\n", "trade", "login", "dora", "--password-stdin")
	e.ok("", "trade", "deposit", "250.00")
	file := filepath.Join(t.TempDir(), "cluster.backup")
	b := e.okJSON("", "cluster", "backup", "--out", file)
	wantField(t, b, "file", file)
	if idx, _ := b["applied_index"].(float64); idx <= 0 {
		t.Fatalf("backup output: %v", b)
	}
	if n, _ := b["accounts"].(float64); n < 1 {
		t.Fatalf("backup output: %v", b)
	}
	if r := e.run("", "cluster", "backup", "--out", file); r.Code == 0 || !strings.Contains(r.Stderr, "exists") {
		t.Fatalf("a second backup over the first: %s", r)
	}
	if left, _ := filepath.Glob(file + ".partial*"); len(left) > 0 {
		t.Fatalf("partial files left behind: %v", left)
	}
	// A write after the first backup: the one restored below must have it.
	e.ok("", "trade", "deposit", "5.00")

	// Quorum lost for good: two nodes die; the survivor restarts (so it
	// has applied nothing since it started, and Raft would call its state
	// not new), can commit nothing, and still serves a backup of all it
	// holds. That backup is the one restored below.
	pc.WaitSame()
	leader := pc.Leader()
	survivor := pc.Nodes[0]
	if survivor == leader {
		survivor = pc.Nodes[1]
	}
	for _, p := range pc.Nodes {
		if p != survivor {
			p.Kill()
		}
	}
	survivor.Kill()
	survivor.Restart()
	lost := filepath.Join(t.TempDir(), "survivor.backup")
	env := hatsEnv("HATS_CLUSTER="+survivor.HTTPAddr, "HATS_INSECURE=1")
	if r := runHats(t, cliTimeout, env, "", "cluster", "backup", "--node", survivor.ID, "--out", lost); r.Code != 0 {
		t.Fatalf("backup from the survivor of a lost quorum: %s", r)
	}
	survivor.Kill()
	file = lost

	// `hats restore` makes r1's data dir; r1 then starts as a plain
	// node on it (nothing about the backup on its command line).
	fresh := &ProcCluster{t: t, dir: t.TempDir()}
	first := NewProc(t, fresh.dir, "r1", nil)
	first.RaftAddr, first.HTTPAddr = procFreeAddr(t), procFreeAddr(t)
	restore := func() hatsRun {
		return runHats(t, cliTimeout, hatsEnv(), "", "restore", "--from", file, "--id", first.ID, "--data-dir", first.Dir, "--raft-addr", first.RaftAddr, "--json")
	}
	r := restore()
	if r.Code != 0 {
		t.Fatalf("hats restore: %s", r)
	}
	for _, want := range []string{`"applied_index"`, `"accounts"`, `"node": "r1"`} {
		if !strings.Contains(r.Stdout, want) {
			t.Fatalf("hats restore output lacks %s: %s", want, r)
		}
	}
	if r := restore(); r.Code == 0 || !strings.Contains(r.Stderr, "already holds Raft state") {
		t.Fatalf("a second hats restore into the same data dir: %s", r)
	}
	fresh.Nodes = append(fresh.Nodes, first)
	first.Restart()
	fresh.WaitReady()
	fresh.AddNode()
	fresh.AddNode()
	e2 := newCLIEnv(t, fresh)
	e2.ok("vault-pass-1\n", "trade", "login", "dora", "--password-stdin")
	wantField(t, e2.okJSON("", "trade", "account", "--consistency", "linearizable"), "cash", "255.00")
	e2.ok("", "trade", "deposit", "1.00")
	fresh.WaitSame()
}
