package node

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
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
//
// Restore is a step of its own (`hats restore`), run once before the
// node's first start, as etcd's snapshot restore is, not a flag of `hats
// node`: a flag left on a service's command line would, the day that
// node's disk is replaced, start yet another cluster from the old
// backup beside the live one, with the same accounts trading in both.

// RestoreConfig says which backup to restore and as which node.
type RestoreConfig struct {
	Backup   string // a file written by GET /v1/cluster/backup
	ID       string // the node's --id
	DataDir  string // an empty (or missing) data dir
	RaftAddr string // the Raft address the node will advertise
	Logger   *slog.Logger
}

// Restore writes a new cluster's first node into rc.DataDir from a
// backup: its state file and a snapshot that opens its Raft history, with
// the node as the only voter at rc.RaftAddr. Start the node on that dir
// (with the same --id and Raft address, without --join); others then join
// it. Nothing is written into a data dir that already holds Raft or
// state-machine data. A restore that fails midway leaves a marker file
// that a start refuses (empty the dir and restore again).
func Restore(rc RestoreConfig) (fsm.BackupInfo, error) {
	if err := checkIdentity(rc.ID, rc.DataDir); err != nil {
		return fsm.BackupInfo{}, err
	}
	log := rc.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if rc.Backup == "" {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --from: a backup file is required", ErrConfig)
	}
	addr, err := transport.AdvertiseAddr(rc.RaftAddr)
	if err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --raft-addr: %w", ErrConfig, err)
	}
	// A bad backup, or one from a newer release, is refused before the
	// data dir is touched.
	pre, err := fsm.InspectBackup(rc.Backup)
	if err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --from: %w", ErrConfig, err)
	}
	if pre.Rules > fsm.SupportedRules {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --from %s: %w: its state-machine rules version is %d, this release applies up to %d", ErrConfig, rc.Backup, fsm.ErrRulesTooNew, pre.Rules, fsm.SupportedRules)
	}
	if err := os.MkdirAll(rc.DataDir, 0o700); err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := claimDataDir(rc.DataDir, rc.ID); err != nil {
		return fsm.BackupInfo{}, err
	}
	rlog := hclog.New(&hclog.LoggerOptions{Name: "raft." + rc.ID, Level: hclog.Warn, Output: io.Discard})
	snaps, err := newSteppedSnapshots(rc.DataDir, 2, rlog, log.With("component", "snapshots", "node", rc.ID))
	if err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("open snapshot store: %w", err)
	}
	// Refuse before writing anything: a state file restored beside
	// another cluster's Raft log would later start as that node's state.
	format, err := LogStoreIn(rc.DataDir)
	if err != nil {
		return fsm.BackupInfo{}, err
	}
	if list, lerr := snaps.List(); format != "" || lerr != nil || len(list) > 0 {
		return fsm.BackupInfo{}, fmt.Errorf("%w: %s already holds Raft state (log %q, %d snapshots); restore into an empty data dir", ErrConfig, rc.DataDir, format, len(list))
	}
	// Until the restore is whole, a marker makes hats node refuse the
	// dir: without it, a restore that failed before state.db was in place
	// would leave a dir that starts a new, empty cluster.
	marker := filepath.Join(rc.DataDir, restoreMarker)
	if err := WriteFileAtomic(marker, []byte("hats restore --from "+rc.Backup+"\n"), 0o600); err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	statePath := filepath.Join(rc.DataDir, "state.db")
	info, err := fsm.RestoreBackup(rc.Backup, statePath)
	if err != nil {
		return fsm.BackupInfo{}, fmt.Errorf("%w: --from: %w", ErrConfig, err)
	}
	f, err := fsm.OpenWith(statePath, log.With("component", "fsm", "node", rc.ID), fsm.DefaultOptions())
	if err != nil {
		return fsm.BackupInfo{}, err
	}
	err = seedSnapshot(f, snaps, raft.ServerID(rc.ID), raft.ServerAddress(addr), info)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = removeSynced(marker)
	}
	if err != nil {
		return fsm.BackupInfo{}, err
	}
	return info, nil
}

// restoreMarker names the file that marks a data dir whose restore has
// not finished (checkRestoreMarker).
const restoreMarker = "restore-in-progress"

// checkRestoreMarker refuses a data dir that an unfinished hats restore
// left behind.
func checkRestoreMarker(dataDir string) error {
	if _, err := os.Stat(filepath.Join(dataDir, restoreMarker)); err == nil {
		return fmt.Errorf("%w: %s holds an unfinished hats restore (%s): empty the data dir and restore again, or join with an empty one", ErrConfig, dataDir, restoreMarker)
	}
	return nil
}

// seedSnapshot makes the restored state the first snapshot of the new
// cluster's Raft history.
func seedSnapshot(f *fsm.FSM, snaps raft.SnapshotStore, id raft.ServerID, addr raft.ServerAddress, info fsm.BackupInfo) error {
	if got := f.AppliedIndex(); got != info.AppliedIndex {
		return fmt.Errorf("%w: restored state at index %d, backup at %d", ErrConfig, got, info.AppliedIndex)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: id, Address: addr}}}
	// The transport only encodes the configuration's peers for old
	// snapshot readers, as the network transport would: by address.
	_, enc := raft.NewInmemTransport(addr)
	sink, err := snaps.Create(raft.SnapshotVersionMax, info.AppliedIndex, fsm.RestoredTerm, conf, info.AppliedIndex, enc)
	if err != nil {
		return fmt.Errorf("restore: create snapshot: %w", err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("restore: %w", err)
	}
	defer snap.Release()
	if err := snap.Persist(sink); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}
