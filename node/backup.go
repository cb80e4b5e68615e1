package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/transport"
)

// Backup implements transport.BackupSource: this node's state as of its
// applied index, read from a Raft snapshot taken for the purpose (or the
// newest one, when nothing was applied since). A snapshot is the state
// file at one index, written while applying goes on (fsm.Snapshot), so a
// backup costs the cluster no pause; it also lets Raft compact its log,
// as a scheduled snapshot would.
func (n *Node) Backup(ctx context.Context) (*transport.Backup, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f := n.raft.Snapshot()
	err := f.Error()
	switch {
	case err == nil:
		meta, rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: open the backup snapshot: %v", transport.ErrUnavailable, err)
		}
		return &transport.Backup{Node: n.cfg.ID, Index: meta.Index, Term: meta.Term, Size: meta.Size, Body: rc}, nil
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		list, err := n.snaps.List()
		if err != nil || len(list) == 0 {
			return nil, fmt.Errorf("%w: no snapshot to back up from: %v", transport.ErrUnavailable, err)
		}
		meta, rc, err := n.snaps.Open(list[0].ID)
		if err != nil {
			return nil, fmt.Errorf("%w: open snapshot %s: %v", transport.ErrUnavailable, list[0].ID, err)
		}
		return &transport.Backup{Node: n.cfg.ID, Index: meta.Index, Term: meta.Term, Size: meta.Size, Body: rc}, nil
	default:
		return nil, fmt.Errorf("%w: snapshot for a backup: %v", transport.ErrUnavailable, err)
	}
}
