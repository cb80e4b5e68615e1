package fsm

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// A batch entry applies each command in order with its own result; a
// rejection inside it leaves no trace; a repeated key inside the same batch
// replays; and the outcome equals applying the same commands one by one.
func TestBatchEntryAppliesEachCommand(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	cmds := []*Command{
		at(keyed(deposit(ann, 1000), "k1"), 5e18),
		at(withdraw(ann, 5000), 5e18),
		at(keyed(deposit(ann, 1000), "k1"), 5e18), // same key: replay
		at(deposit(ann, 250), 5e18),
	}
	parts := make([][]byte, len(cmds))
	for i, c := range cmds {
		parts[i] = Encode(c)
	}
	l := &raft.Log{Index: h.next, Term: h.term, Type: raft.LogCommand, Data: EncodeBatch(parts)}
	h.next++
	resp := h.f.ApplyBatch([]*raft.Log{l})[0]
	br, ok := resp.(*BatchResult)
	if !ok || len(br.Results) != len(cmds) {
		t.Fatalf("response %T %+v", resp, resp)
	}
	wantCode(t, br.Results[0], CodeOK)
	wantCode(t, br.Results[1], CodeInsufficientFunds)
	wantCode(t, br.Results[2], CodeOK)
	if !br.Results[2].Replay {
		t.Fatal("repeated key inside a batch was applied again")
	}
	wantCode(t, br.Results[3], CodeOK)
	if got := cash(t, h.f, ann); got != 1250 {
		t.Fatalf("cash %s, want 12.50", got)
	}
	if n := h.f.CommandsApplied(); n < 4 {
		t.Fatalf("commands applied %d", n)
	}
	// The same commands one entry each give the same state.
	ref := newHarness(t)
	ref.register("ann")
	ref.apply(cmds...)
	if hashOf(t, h.f) != hashOf(t, ref.f) {
		t.Fatal("batched and unbatched application differ")
	}
}

func TestDecodeBatchRejectsMalformed(t *testing.T) {
	good := EncodeBatch([][]byte{Encode(deposit(1, 5)), Encode(deposit(1, 6))})
	for i := 0; i < len(good); i++ {
		if _, err := DecodeBatch(good[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	if _, err := DecodeBatch(EncodeBatch(nil)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("empty batch: %v", err)
	}
	nested := EncodeBatch([][]byte{good})
	if _, err := DecodeBatch(nested); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("nested batch: %v", err)
	}
	if cmds, err := DecodeBatch(good); err != nil || len(cmds) != 2 || cmds[1].Amount != 6 {
		t.Fatalf("good batch: %v %+v", err, cmds)
	}
}
