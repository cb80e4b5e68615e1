package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Raft log stores. A node keeps its Raft log (entries, current term, vote)
// in one of two formats:
//
//   - "wal" (hashicorp/raft-wal): append-only segment files, one fsync per
//     append. The default for new data dirs.
//   - "boltdb" (hashicorp/raft-boltdb/v2): a bbolt B+tree, whose commit
//     fsyncs twice (pages, then the meta page). Measured here it halves
//     what a 3-node cluster can commit and doubles one client's round trip
//     (docs/performance.md), so it is kept for data dirs created with it.
//
// The format is fixed when a data dir is created: an existing dir is
// opened in the format it holds, whatever the flag says, and a flag that
// names the other format is a configuration error rather than a silent
// second, empty log.
const (
	LogStoreWAL    = "wal"
	LogStoreBoltDB = "boltdb"

	walDir        = "raft-wal"
	boltLogDB     = "raft.db"
	storeLockWait = 2 * time.Second
)

// logStore is what Raft needs from a log store.
type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// LogStoreIn reports the log store format a data dir holds: LogStoreWAL,
// LogStoreBoltDB, or "" for a dir without a Raft log yet.
func LogStoreIn(dataDir string) (string, error) {
	hasWAL, err := exists(filepath.Join(dataDir, walDir))
	if err != nil {
		return "", err
	}
	hasBolt, err := exists(filepath.Join(dataDir, boltLogDB))
	if err != nil {
		return "", err
	}
	switch {
	case hasWAL && hasBolt:
		return "", fmt.Errorf("%w: %s holds both a %s and a %s Raft log; keep the one the node last ran with", ErrDataDir, dataDir, walDir, boltLogDB)
	case hasWAL:
		return LogStoreWAL, nil
	case hasBolt:
		return LogStoreBoltDB, nil
	}
	return "", nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("%w: %v", ErrDataDir, err)
}

// openLogStore opens the data dir's Raft log in the format it holds, or
// creates one in the format asked for ("" means LogStoreWAL).
// segmentSize sizes new WAL segment files (0: the library's 64 MiB).
func openLogStore(dataDir, want string, segmentSize int, log hclog.Logger) (logStore, string, error) {
	switch want {
	case "", LogStoreWAL, LogStoreBoltDB:
	default:
		return nil, "", fmt.Errorf("%w: --raft-log-store %q: want %s or %s", ErrConfig, want, LogStoreWAL, LogStoreBoltDB)
	}
	have, err := LogStoreIn(dataDir)
	if err != nil {
		return nil, "", err
	}
	kind := have
	switch {
	case have == "" && want == "":
		kind = LogStoreWAL
	case have == "":
		kind = want
	case want != "" && want != have:
		return nil, "", fmt.Errorf("%w: --raft-log-store %s, but %s already holds a %s Raft log (the format is fixed when the data dir is created)", ErrConfig, want, dataDir, have)
	}
	if kind == LogStoreBoltDB {
		st, err := raftboltdb.New(raftboltdb.Options{
			Path: filepath.Join(dataDir, boltLogDB),
			// Every append is still fsynced; only the freelist is not
			// rewritten per commit (bbolt rebuilds it on open).
			BoltOptions: &bbolt.Options{Timeout: storeLockWait, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
		})
		if err != nil {
			return nil, "", fmt.Errorf("open raft log: %w", err)
		}
		return st, kind, nil
	}
	dir := filepath.Join(dataDir, walDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrDataDir, err)
	}
	// A size of 0 leaves the library's default.
	st, err := openWAL(dir, segmentSize, log.Named("wal"))
	if err != nil {
		if have == "" {
			// Do not let a failed first open fix the format.
			_ = os.RemoveAll(dir)
		}
		return nil, "", fmt.Errorf("open raft log: %w", err)
	}
	return st, kind, nil
}

// LogStore is a data dir's Raft log, opened by OpenLogStore.
type LogStore interface {
	raft.LogStore
	io.Closer
}

// OpenLogStore opens the Raft log of a data dir, in the format it holds,
// for inspection (post-mortem checks, tools). The node must be stopped:
// the WAL has no read-only mode (opening it tidies unused segment files)
// and its metadata lock waits without a timeout. It fails with ErrDataDir
// if the dir has no Raft log.
func OpenLogStore(dataDir string) (LogStore, error) {
	have, err := LogStoreIn(dataDir)
	if err != nil {
		return nil, err
	}
	if have == "" {
		return nil, fmt.Errorf("%w: %s has no Raft log", ErrDataDir, dataDir)
	}
	st, _, err := openLogStore(dataDir, have, 0, hclog.NewNullLogger())
	return st, err
}
