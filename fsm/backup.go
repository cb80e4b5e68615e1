package fsm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrBackup reports a backup that cannot be inspected or restored.
var ErrBackup = errors.New("bad backup")

// RestoredTerm is the term a restored state, and the snapshot a restored
// cluster starts from, carry: the first of the new cluster.
const RestoredTerm = 1

// BackupInfo says where a backup stands: the state file of the cluster it
// came from, as of that cluster's applied index and term.
type BackupInfo struct {
	AppliedIndex uint64
	AppliedTerm  uint64
	Rules        uint64 // state-machine rules version in force (rules.go)
	Accounts     int    // accounts in it (a sanity figure for operators)
	Bytes        int64  // size of the file
}

// InspectBackup checks a backup (a state file, as GET /v1/cluster/backup or
// a Raft snapshot's state.bin holds it) page by page and reports where it
// stands.
func InspectBackup(path string) (BackupInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("%w: %w", ErrBackup, err)
	}
	info := BackupInfo{Bytes: st.Size()}
	err = validateStateFile(path, st.Size(), true, func(tx *bolt.Tx) {
		meta := tx.Bucket(bMeta)
		info.AppliedIndex, info.AppliedTerm = getU64(meta, kAppliedIndex), getU64(meta, kAppliedTerm)
		info.Rules = rulesOf(meta)
		if tr := tx.Bucket(bTrader); tr != nil {
			if a := tr.Bucket(bAccounts); a != nil {
				info.Accounts = a.Stats().KeyN
			}
		}
	})
	if err != nil {
		return BackupInfo{}, fmt.Errorf("%w: %s: %v", ErrBackup, path, err)
	}
	return info, nil
}

// RestoreBackup makes dst the state file of a new cluster holding the
// trader and market state of the backup at src. What belonged to the old
// cluster rather than to its traders is left out: its member records and
// its cluster key (the new cluster's first leader records itself and
// draws a new key, so nodes of the old cluster cannot call the new one's
// internal endpoints). The applied index stays, and the term becomes
// RestoredTerm: the new cluster's Raft history starts with a snapshot of
// this state at that index and term (node.Config.Restore), so that its
// log goes on after the index and joining nodes receive the state by
// snapshot. dst must not exist.
func RestoreBackup(src, dst string) (BackupInfo, error) {
	info, err := InspectBackup(src)
	if err != nil {
		return BackupInfo{}, err
	}
	if info.AppliedIndex == 0 {
		return BackupInfo{}, fmt.Errorf("%w: %s holds no applied state (index 0)", ErrBackup, src)
	}
	if _, err := os.Stat(dst); err == nil {
		return BackupInfo{}, fmt.Errorf("%w: %s exists; restore into a new data dir", ErrBackup, dst)
	}
	tmp := dst + ".restore"
	_ = os.Remove(tmp) // ours, left by a restore that died
	if err := copyFileSynced(src, tmp); err != nil {
		return BackupInfo{}, fmt.Errorf("%w: copy: %w", ErrBackup, err)
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		os.Remove(tmp)
		return BackupInfo{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if err := meta.Delete(kClusterKey); err != nil {
			return err
		}
		if err := meta.Put(kAppliedTerm, u64key(RestoredTerm)); err != nil {
			return err
		}
		if c := tx.Bucket(bCluster); c != nil && c.Bucket(bNodes) != nil {
			if err := c.DeleteBucket(bNodes); err != nil {
				return err
			}
			if _, err := c.CreateBucket(bNodes); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return BackupInfo{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return info, nil
}

func copyFileSynced(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
