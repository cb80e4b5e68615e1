package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/hats-trading/hats/market"
	"reflect"
	"testing"

	"github.com/hats-trading/hats/trader"
)

// fullCommands returns one command per type with every field that type
// encodes set to a non-zero value (negative where the field is signed, so
// zig-zag encoding is exercised).
func fullCommands() []*Command {
	hash := bytes.Repeat([]byte{0xab}, 32)
	return []*Command{
		{Type: TypeInitCluster, Time: 1_700_000_000_000_000_001, Account: 0, Key: "k-init", ClusterKey: "secret-cluster-key"},
		{Type: TypeSetNode, Time: -5, Account: 1, Key: "k-set", NodeID: "n1", RaftAddr: "10.0.0.1:7000", HTTPAddr: "10.0.0.1:8000", GossipAddr: "10.0.0.1:7946"},
		{Type: TypeRemoveNode, Time: 42, Account: 2, Key: "k-rm", NodeID: "n2"},
		{Type: TypeRegister, Time: 43, Account: 0, Key: "k-reg", Username: "ann", PassHash: []byte("$2a$10$abcdefghijklmnopqrstuv"), Name: "Ann Lee", Email: "ann@example.com"},
		{Type: TypeCreateSession, Time: 44, Account: 3, Key: "k-login", Username: "ann", TokenHash: hash, Expires: 1_800_000_000_000_000_000, NodeID: "n2"},
		{Type: TypeReassign, Time: 56, Account: 3, TokenHash: hash, NodeID: "n3"},
		{Type: TypeRevokeSession, Time: 45, Account: 1<<64 - 1, Key: "k-logout", TokenHash: hash},
		{Type: TypeDeposit, Time: 46, Account: 4, Key: "k-dep", Amount: 15025},
		{Type: TypeWithdraw, Time: 47, Account: 5, Key: "k-wd", Amount: -1 << 63},
		{Type: TypeProfile, Time: 48, Account: 6, Key: "k-prof", SetName: true, Name: "Ann B. Lee", SetEmail: true, Email: "ann.b@example.com"},
		{Type: TypeSetInstrument, Time: 49, Symbol: "AAPL", Name: "Apple Inc.", Price: 18910},
		{Type: TypeDepositShares, Time: 50, Account: 7, Key: "k-ds", Symbol: "MSFT", Qty: 100},
		{Type: TypeWithdrawShares, Time: 51, Account: 7, Key: "k-ws", Symbol: "MSFT", Qty: 1 << 40},
		{Type: TypePlaceOrder, Time: 52, Account: 8, ClientID: "c-1", Symbol: "NVDA", Side: 2, OrdType: 4, TIF: 2, PostOnly: true, Qty: 10, Limit: 12345, Stop: 12000},
		{Type: TypeCancelOrder, Time: 53, Account: 8, OrderID: 1<<64 - 1},
		{Type: TypeAmendOrder, Time: 54, Account: 8, OrderID: 77, Qty: 5, Limit: 12300},
		{Type: TypeTick, Time: 55, TickSeq: 9, FeedKind: "sim", FeedState: []byte{1, 2, 3}, Prices: []market.TickPrice{{Symbol: "AAPL", Price: 18911}, {Symbol: "MSFT", Price: 41500}}, MMSpread: 20, MMSize: 100},
		{Type: TypeSetRules, Time: 57, Rules: RulesStopLimitCollar},
	}
}

func TestCommandRoundTripEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, c := range fullCommands() {
		seen[c.Type] = true
		t.Run(c.Type.String(), func(t *testing.T) {
			b := Encode(c)
			if b[0] != byte(c.Type) {
				t.Fatalf("first byte = %d, want type %d", b[0], c.Type)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", got, c)
			}
			if again := Encode(got); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
			}
		})
	}
	for typ := range typeNames {
		if !seen[typ] {
			t.Errorf("command type %s has no round-trip case", typ)
		}
	}
}

func TestCommandRoundTripZeroValues(t *testing.T) {
	// Every type with only the type set must also round trip (byte fields
	// come back as empty, so compare through a second encoding).
	for typ := range typeNames {
		c := &Command{Type: typ}
		b := Encode(c)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: Decode: %v", typ, err)
		}
		if got.Type != typ || !bytes.Equal(Encode(got), b) {
			t.Fatalf("%s: zero command does not round trip: %+v", typ, got)
		}
	}
}

func TestProfileFlagsRoundTrip(t *testing.T) {
	for _, setName := range []bool{false, true} {
		for _, setEmail := range []bool{false, true} {
			c := &Command{Type: TypeProfile, Account: 1, SetName: setName, Name: "N", SetEmail: setEmail, Email: "e@x.io"}
			got, err := Decode(Encode(c))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("got %+v want %+v", got, c)
			}
		}
	}
}

func TestDecodeEmpty(t *testing.T) {
	for _, b := range [][]byte{nil, {}} {
		c, err := Decode(b)
		if !errors.Is(err, ErrCorrupt) || c != nil {
			t.Fatalf("Decode(%v) = %v, %v; want nil, ErrCorrupt", b, c, err)
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	valid := Encode(&Command{Type: TypeDeposit, Account: 1, Amount: 5})
	for _, typ := range []byte{0, 100, 127, 200, 255} {
		if _, known := typeNames[Type(typ)]; known {
			t.Fatalf("test setup: type %d is known", typ)
		}
		b := append([]byte{typ}, valid[1:]...)
		c, err := Decode(b)
		if !errors.Is(err, ErrCorrupt) || c != nil {
			t.Errorf("Decode(type %d) = %v, %v; want ErrCorrupt", typ, c, err)
		}
	}
}

// decodeNoPanic runs Decode and turns a panic into a test failure.
func decodeNoPanic(t *testing.T, b []byte) (c *Command, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Decode(%x) panicked: %v", b, r)
		}
	}()
	return Decode(b)
}

func TestDecodeTruncated(t *testing.T) {
	for _, c := range fullCommands() {
		b := Encode(c)
		for n := 0; n < len(b); n++ {
			got, err := decodeNoPanic(t, b[:n:n])
			if err == nil {
				t.Errorf("%s: prefix %d/%d decoded as %+v, want error", c.Type, n, len(b), got)
				continue
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: prefix %d/%d: error %v does not wrap ErrCorrupt", c.Type, n, len(b), err)
			}
			if got != nil {
				t.Errorf("%s: prefix %d/%d returned a command with an error", c.Type, n, len(b))
			}
		}
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	for _, c := range fullCommands() {
		b := Encode(c)
		for _, tail := range [][]byte{{0}, {1}, {0xff, 0xff}} {
			bad := append(bytes.Clone(b), tail...)
			if got, err := decodeNoPanic(t, bad); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s + %x: Decode = %+v, %v; want ErrCorrupt", c.Type, tail, got, err)
			}
		}
	}
}

func TestDecodeBadBool(t *testing.T) {
	w := writer{}
	w.byte1(byte(TypeProfile))
	w.i(1)
	w.u(1)
	w.str("")
	w.byte1(2) // SetName: neither 0 nor 1
	w.str("n")
	w.boolean(false)
	w.str("")
	if _, err := decodeNoPanic(t, w.b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bool byte 2: err = %v, want ErrCorrupt", err)
	}
}

func TestDecodeHugeLengthPrefix(t *testing.T) {
	// A length prefix far beyond the input must fail cleanly, not allocate
	// or slice out of range.
	for _, n := range []uint64{1 << 62, 1<<64 - 1, 1000} {
		w := writer{}
		w.byte1(byte(TypeRegister))
		w.i(1)
		w.u(0)
		w.str("")
		w.str("ann")
		w.u(n) // PassHash length
		w.b = append(w.b, "short"...)
		if _, err := decodeNoPanic(t, w.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("length %d: err = %v, want ErrCorrupt", n, err)
		}
	}
	// An over-long varint (11 continuation bytes) overflows uint64.
	bad := append([]byte{byte(TypeDeposit)}, bytes.Repeat([]byte{0xff}, 11)...)
	if _, err := decodeNoPanic(t, bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("overflowing varint: err = %v, want ErrCorrupt", err)
	}
}

func TestDecodeDoesNotAliasInput(t *testing.T) {
	c := fullCommands()[3] // register: has a byte slice field
	b := Encode(c)
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("decoded command changed when the input buffer was overwritten: %+v", got)
	}
}

func TestTypeString(t *testing.T) {
	if got := TypeDeposit.String(); got != "deposit" {
		t.Errorf("TypeDeposit.String() = %q", got)
	}
	if got := Type(200).String(); got != "type(200)" {
		t.Errorf("Type(200).String() = %q", got)
	}
}

func TestDigestIgnoresStampsButNotIntent(t *testing.T) {
	base := &Command{Type: TypeRegister, Time: 1, Account: 0, Key: "k", Username: "ann", PassHash: []byte("h1"), Name: "A", Email: "a@x.io"}
	same := *base
	same.Time, same.PassHash = 999, []byte("h2")
	if digest(base) != digest(&same) {
		t.Errorf("digest changed with Time/PassHash only")
	}
	sess := &Command{Type: TypeCreateSession, Username: "ann", TokenHash: []byte("t"), Expires: 1}
	sess2 := *sess
	sess2.Expires = 2
	if digest(sess) != digest(&sess2) {
		t.Errorf("digest changed with Expires only")
	}
	other := *base
	other.Username = "bob"
	if digest(base) == digest(&other) {
		t.Errorf("digest ignored Username")
	}
	dep := &Command{Type: TypeDeposit, Account: 1, Key: "k", Amount: 100}
	dep2 := *dep
	dep2.Amount = 101
	wd := *dep
	wd.Type = TypeWithdraw
	if digest(dep) == digest(&dep2) || digest(dep) == digest(&wd) {
		t.Errorf("digest ignored amount or type")
	}
	if digest(base) != digest(base) {
		t.Errorf("digest not stable")
	}
	if base.Time != 1 || string(base.PassHash) != "h1" {
		t.Errorf("digest mutated its argument: %+v", base)
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range fullCommands() {
		b := Encode(c)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(append(bytes.Clone(b), 0))
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{byte(TypeDeposit), 0x80, 0x00, 0x00, 0x00, 0x00}) // non-canonical varint
	f.Add([]byte{byte(TypeProfile), 0, 0, 0, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b) // must never panic
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || c != nil {
				t.Fatalf("Decode(%x) = %v, %v; want nil, ErrCorrupt", b, c, err)
			}
			return
		}
		// Encode is canonical (minimal varints), so the input may differ
		// from its re-encoding only by non-minimal varints and can never be
		// shorter; what it means must survive a round trip unchanged.
		enc := Encode(c)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding of %x is longer: %x", b, enc)
		}
		c2, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%x))): %v", b, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		if !bytes.Equal(Encode(c2), enc) {
			t.Fatalf("Encode is not a fixed point for %x", b)
		}
	})
}

func TestResultRoundTrip(t *testing.T) {
	tests := []*Result{
		{},
		{Index: 1},
		{Index: 1<<64 - 1, Code: CodeInsufficientFunds, Message: "withdraw 5.00 but only 1.00 available", Replay: true},
		{Index: 7, Account: &trader.Account{ID: 3, Username: "ann", Name: "Ann Lee", Email: "ann@example.com", Cash: 15025, Reserved: 25, CreatedAt: 1_700_000_000_000_000_000}},
		{Index: 8, Code: CodeOK, Account: &trader.Account{ID: 4, Cash: -1, Reserved: -2, CreatedAt: -3}},
	}
	for i, r := range tests {
		b := EncodeResult(r)
		got, err := DecodeResult(b)
		if err != nil {
			t.Fatalf("case %d: DecodeResult: %v", i, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("case %d: round trip mismatch:\n got %+v\nwant %+v", i, got, r)
		}
		for n := 0; n < len(b); n++ {
			if _, err := DecodeResult(b[:n:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("case %d: prefix %d/%d: err = %v, want ErrCorrupt", i, n, len(b), err)
			}
		}
		if _, err := DecodeResult(append(bytes.Clone(b), 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("case %d: trailing byte accepted", i)
		}
	}
}

func TestResultErr(t *testing.T) {
	if err := (&Result{}).Err(); err != nil {
		t.Fatalf("OK result Err() = %v", err)
	}
	tests := []struct {
		code string
		want error
	}{
		{CodeBadAmount, trader.ErrBadAmount},
		{CodeInsufficientFunds, trader.ErrInsufficientFunds},
		{CodeOverflow, trader.ErrOverflow},
		{CodeUsernameTaken, ErrUsernameTaken},
		{CodeUnknownAccount, ErrUnknownAccount},
		{CodeUnknownUser, ErrUnknownUser},
		{CodeUnknownSession, ErrUnknownSession},
		{CodeIdempotencyReused, ErrIdempotencyReused},
		{CodeAlreadyInitialized, ErrAlreadyInitialized},
		{CodeInvalidCommand, ErrInvalidCommand},
	}
	for _, tt := range tests {
		err := (&Result{Code: tt.code, Message: "why"}).Err()
		if !errors.Is(err, tt.want) {
			t.Errorf("code %q: Err() = %v, want wrapping %v", tt.code, err, tt.want)
		}
		// reject is the inverse direction: sentinel -> code.
		if got := reject(tt.want).Code; got != tt.code {
			t.Errorf("reject(%v).Code = %q, want %q", tt.want, got, tt.code)
		}
	}
	if got := reject(errors.New("something else")).Code; got != CodeInvalidCommand {
		t.Errorf("reject(unknown error).Code = %q, want %q", got, CodeInvalidCommand)
	}
	if err := (&Result{Code: "mystery", Message: "m"}).Err(); err == nil {
		t.Errorf("unknown code gave nil error")
	}
}

// Symbols decode to interned strings: the same bytes give the same string
// (without an allocation once seen), a decoded symbol does not alias the
// input, and the table stops growing at maxInterned.
func TestDecodedSymbolsAreInternedAndBounded(t *testing.T) {
	c := &Command{Type: TypePlaceOrder, ClientID: "c1", Symbol: "INTERNTEST", Side: 1, OrdType: 1, TIF: 1, Qty: 1, Limit: 100}
	b := Encode(c)
	first, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if first.Symbol != "INTERNTEST" {
		t.Fatalf("symbol changed when the input was overwritten: %q", first.Symbol)
	}
	b = Encode(c)
	if n := testing.AllocsPerRun(100, func() { _ = intern([]byte("INTERNTEST")) }); n != 0 {
		t.Errorf("interning a known symbol allocates %.0f times", n)
	}
	for i := 0; i < maxInterned+10; i++ {
		if s := intern([]byte(fmt.Sprintf("sym-%d", i))); s != fmt.Sprintf("sym-%d", i) {
			t.Fatalf("intern(sym-%d) = %q", i, s)
		}
	}
	if n := len(*internTab.Load()); n > maxInterned {
		t.Errorf("intern table holds %d strings, want at most %d", n, maxInterned)
	}
	again, err := Decode(b)
	if err != nil || again.Symbol != "INTERNTEST" {
		t.Fatalf("Decode after the table filled: %v, %q", err, again.Symbol)
	}
}
