package fsm

import "fmt"

// TypeBatch marks a log entry that carries several commands: the leader's
// group commit packs the commands arriving together into one Raft entry.
// Each command keeps its own idempotency key or client order ID and gets
// its own Result; the whole entry commits or not as one.
const TypeBatch Type = 18

// MaxBatch bounds the commands in one batch entry.
const MaxBatch = 4096

// BatchResult is the response of a batch entry: one Result per command, in
// order.
type BatchResult struct {
	Results []*Result
}

// EncodeBatch packs encoded commands into one entry.
func EncodeBatch(cmds [][]byte) []byte {
	n := 8
	for _, c := range cmds {
		n += len(c) + 4
	}
	w := writer{b: make([]byte, 0, n)}
	w.byte1(byte(TypeBatch))
	w.u(uint64(len(cmds)))
	for _, c := range cmds {
		w.bytes(c)
	}
	return w.b
}

// DecodeBatch unpacks a batch entry into its commands.
func DecodeBatch(b []byte) ([]*Command, error) {
	if len(b) == 0 || Type(b[0]) != TypeBatch {
		return nil, fmt.Errorf("%w: not a batch", ErrCorrupt)
	}
	r := reader{b: b[1:]}
	n := r.u()
	if r.err == nil && (n == 0 || n > MaxBatch) {
		return nil, fmt.Errorf("%w: batch of %d commands", ErrCorrupt, n)
	}
	out := make([]*Command, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		part, _ := r.field("command") // Decode copies what it keeps
		c, err := Decode(part)
		if r.err != nil {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("batch command %d: %w", i, err)
		}
		out = append(out, c)
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	return out, nil
}
