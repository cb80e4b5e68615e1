package node

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hats-trading/hats/fsm"
)

func newTestSnapshots(t *testing.T) (*steppedSnapshots, raft.Transport) {
	t.Helper()
	s, err := newSteppedSnapshots(t.TempDir(), 2, hclog.NewNullLogger(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, trans := raft.NewInmemTransport("")
	return s, trans
}

// A snapshot of three and a bit steps is fsynced three times while it is
// written (Close syncs the rest), and reads back byte for byte with the
// store's checksum. Fails if the file store's layout moved (the steps then
// find no file) or if a step is skipped.
func TestSnapshotSinkSyncsInSteps(t *testing.T) {
	store, trans := newTestSnapshots(t)
	sink, err := store.Create(1, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*fsm.SnapshotSyncStep+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for rest := data; len(rest) > 0; {
		n := min(32<<10, len(rest)) // bbolt's WriteTo writes 32 KiB at a time
		if _, err := sink.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if got := store.steps.Load(); got != 3 {
		t.Fatalf("%d step fsyncs while writing %d bytes, want 3", got, len(data))
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	list, err := store.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v, %d snapshots", err, len(list))
	}
	meta, rc, err := store.Open(list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc) // the store checks its CRC at EOF
	if err != nil {
		t.Fatal(err)
	}
	if meta.Size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (meta says %d), want the %d written", len(got), meta.Size, len(data))
	}
}

// Cancel closes the step descriptor and leaves no snapshot behind.
func TestSnapshotSinkCancel(t *testing.T) {
	store, trans := newTestSnapshots(t)
	sink, err := store.Create(1, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(make([]byte, fsm.SnapshotSyncStep+1)); err != nil {
		t.Fatal(err)
	}
	if store.steps.Load() != 1 {
		t.Fatalf("%d step fsyncs, want 1", store.steps.Load())
	}
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if ss := sink.(*steppedSink); ss.f != nil {
		t.Fatal("step descriptor still open after Cancel")
	}
	list, err := store.List()
	if err != nil || len(list) != 0 {
		t.Fatalf("after Cancel: %v, %d snapshots", err, len(list))
	}
	left, _ := filepath.Glob(filepath.Join(store.dir, "*"))
	if len(left) != 0 {
		t.Fatalf("after Cancel the snapshot dir holds %v", left)
	}
}

// If the state file is not where the layout says, the snapshot is still
// written whole (and synced by Close), with no steps.
func TestSnapshotSinkWithoutStateFile(t *testing.T) {
	store, trans := newTestSnapshots(t)
	sink, err := store.Create(1, 10, 2, raft.Configuration{}, 1, trans)
	if err != nil {
		t.Fatal(err)
	}
	sink.(*steppedSink).path = filepath.Join(t.TempDir(), "missing", "state.bin")
	if _, err := sink.Write(make([]byte, 2*fsm.SnapshotSyncStep)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if store.steps.Load() != 0 || !store.warned.Load() {
		t.Fatalf("steps %d warned %v, want 0 and a warning", store.steps.Load(), store.warned.Load())
	}
	if list, _ := store.List(); len(list) != 1 || list[0].Size != 2*fsm.SnapshotSyncStep {
		t.Fatalf("snapshot not kept whole: %+v", list)
	}
}
