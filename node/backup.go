package node

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/hats-trading/hats/transport"
)

// Backup implements transport.BackupSource: this node's state as of its
// applied index, streamed from a state machine snapshot (fsm.SnapshotAt:
// the active layer frozen while applying is held off, then the state file
// read in one bbolt read transaction once that layer is in it). Applying
// goes on meanwhile; no Raft snapshot is taken, so no leader or quorum is
// needed (the survivor of a lost quorum can give one) and the backup is
// never older than what this node has applied. The size is not known
// ahead; a failure mid-stream reaches the reader as an error.
func (n *Node) Backup(ctx context.Context) (*transport.Backup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	snap, index, err := n.fsm.SnapshotAt()
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot for a backup: %v", transport.ErrUnavailable, err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer snap.Release()
		pw.CloseWithError(snap.Persist(pipeSink{pw}))
	}()
	return &transport.Backup{Node: n.cfg.ID, Index: index, Size: -1, Body: pr}, nil
}

// pipeSink is the raft.SnapshotSink a backup persists into: a pipe to the
// HTTP response. Persist closes it on success and cancels it on failure.
type pipeSink struct{ *io.PipeWriter }

var errBackupCancelled = errors.New("backup snapshot failed")

func (pipeSink) ID() string      { return "backup" }
func (s pipeSink) Cancel() error { return s.CloseWithError(errBackupCancelled) }
func (s pipeSink) Close() error  { return s.PipeWriter.Close() }
