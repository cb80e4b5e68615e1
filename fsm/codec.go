package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
)

// ErrCorrupt reports bytes that do not decode: a committed entry, a stored
// record or a forwarded result that is truncated or malformed.
var ErrCorrupt = errors.New("corrupt encoding")

// writer appends a compact binary encoding: unsigned varints, zig-zag signed
// varints and length-prefixed byte strings.
type writer struct{ b []byte }

func (w *writer) u(v uint64)     { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) i(v int64)      { w.b = binary.AppendVarint(w.b, v) }
func (w *writer) byte1(v byte)   { w.b = append(w.b, v) }
func (w *writer) bytes(p []byte) { w.u(uint64(len(p))); w.b = append(w.b, p...) }
func (w *writer) str(s string)   { w.u(uint64(len(s))); w.b = append(w.b, s...) }
func (w *writer) boolean(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

// reader decodes what writer wrote. The first error sticks; later reads
// return zero values, so decoders check err once at the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", ErrCorrupt, what)
	}
}

func (r *reader) u() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) i() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte1() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) boolean() bool {
	switch r.byte1() {
	case 0:
		return false
	case 1:
		return true
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: bad bool", ErrCorrupt)
		}
		return false
	}
}

// field takes the next length-prefixed field (what names it in the
// error); ok is false once decoding has failed.
func (r *reader) field(what string) (v []byte, ok bool) {
	n := r.u()
	if r.err != nil {
		return nil, false
	}
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil, false
	}
	v, r.b = r.b[:n:n], r.b[n:]
	return v, true
}

func (r *reader) bytes() []byte {
	v, ok := r.field("bytes")
	if !ok {
		return nil
	}
	return append(make([]byte, 0, len(v)), v...)
}

func (r *reader) str() string {
	v, _ := r.field("string")
	return string(v)
}

// sym reads a string that records repeat over and over (a symbol, a
// statement line's kind) without allocating once it has been seen.
func (r *reader) sym() string {
	v, _ := r.field("string")
	return intern(v)
}

// Interned strings: a copy-on-write table, read without a lock by the
// apply loop and by views alike; it stops growing at maxInterned entries
// (symbols are few; past that, strings are simply allocated).
var (
	internTab atomic.Pointer[map[string]string]
	internMu  sync.Mutex
)

const maxInterned = 4096

func intern(b []byte) string {
	if m := internTab.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok {
			return s
		}
	}
	s := string(b)
	internMu.Lock()
	defer internMu.Unlock()
	old := internTab.Load()
	if old == nil {
		old = &map[string]string{}
	}
	if len(*old) >= maxInterned {
		return s
	}
	m := maps.Clone(*old)
	m[s] = s
	internTab.Store(&m)
	return s
}

// done reports the first error, or trailing bytes as corruption.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(r.b))
	}
	return r.err
}

func u64key(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
