package node

import (
	"fmt"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
)

// A restore starts a new cluster from a backup. Its state cannot simply
// be the state file of a bootstrapped node: the new log would start at
// index 1, below the state's applied index, and the nodes that join
// would replay that log from nothing and never see the restored state.
// So the restored node's Raft history begins with a snapshot of the
// restored state at the backup's index (term fsm.RestoredTerm, this node
// the only voter): its log goes on after that index, and a node that
// joins is sent the snapshot, exactly as one that fell behind a compacted
// log would be.

// restoreState writes the backup into the new node's state.db, before the
// state machine opens it.
func restoreState(cfg Config, snaps raft.SnapshotStore) (fsm.BackupInfo, error) {
	if len(cfg.Join) > 0 {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --restore starts a new cluster; it cannot be combined with --join (restore one node, then join the others to it)", ErrConfig)
	}
	// Refuse before writing anything: a state file restored beside
	// another cluster's Raft log would later start as that node's state.
	format, err := LogStoreIn(cfg.DataDir)
	if err != nil {
		return fsm.BackupInfo{}, err
	}
	if list, lerr := snaps.List(); format != "" || lerr != nil || len(list) > 0 {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --restore: %s already holds Raft state (log %q, %d snapshots); restore into an empty data dir", ErrConfig, cfg.DataDir, format, len(list))
	}
	info, err := fsm.RestoreBackup(cfg.Restore, filepath.Join(cfg.DataDir, "state.db"))
	if err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --restore: %w", ErrConfig, err)
	}
	return info, nil
}

// seedSnapshot makes the restored state the first snapshot of the new
// cluster's Raft history.
func (n *Node) seedSnapshot(info fsm.BackupInfo) error {
	if got := n.fsm.AppliedIndex(); got != info.AppliedIndex {
		return fmt.Errorf("%w: restored state at index %d, backup at %d", ErrConfig, got, info.AppliedIndex)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.ID), Address: n.trans.LocalAddr()}}}
	sink, err := n.snaps.Create(raft.SnapshotVersionMax, info.AppliedIndex, fsm.RestoredTerm, conf, info.AppliedIndex, n.trans)
	if err != nil {
		return fmt.Errorf("restore: create snapshot: %w", err)
	}
	snap, err := n.fsm.Snapshot()
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("restore: %w", err)
	}
	defer snap.Release()
	if err := snap.Persist(sink); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	n.log.Warn("started a new cluster from a backup; remove --restore from this node's command line now (with an empty data dir it would start yet another cluster)", "backup", n.cfg.Restore, "index", info.AppliedIndex, "accounts", info.Accounts)
	return nil
}
