package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hats-trading/hats/trader"
	bolt "go.etcd.io/bbolt"
)

// t0 is the leader-stamped time of the first command in most tests.
const t0 int64 = 1_700_000_000_000_000_000

// ---------------------------------------------------------------- helpers

func mustOpen(t testing.TB) *FSM {
	t.Helper()
	return mustOpenPath(t, filepath.Join(t.TempDir(), "state.db"))
}

func mustOpenOpts(t testing.TB, opts Options) *FSM {
	t.Helper()
	f, err := OpenWith(filepath.Join(t.TempDir(), "state.db"), nil, opts)
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func mustOpenPath(t testing.TB, path string) *FSM {
	t.Helper()
	f, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// harness feeds commands to an FSM as Raft would: synthetic committed log
// entries with increasing indexes, applied through ApplyBatch.
type harness struct {
	t    testing.TB
	f    *FSM
	next uint64 // index of the next entry
	term uint64
	now  int64 // leader clock: stamped into commands whose Time is 0
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: mustOpen(t), next: 1, term: 1, now: t0}
}

// logs turns commands into log entries at the next indexes. Commands with
// Time 0 get the harness clock, which advances one second per command.
func (h *harness) logs(cmds ...*Command) []*raft.Log {
	out := make([]*raft.Log, 0, len(cmds))
	for _, c := range cmds {
		cp := *c
		if cp.Time == 0 {
			cp.Time = h.now
			h.now += int64(time.Second)
		}
		out = append(out, &raft.Log{Index: h.next, Term: h.term, Type: raft.LogCommand, Data: Encode(&cp)})
		h.next++
	}
	return out
}

// entry returns a non-command log entry at the next index.
func (h *harness) entry(typ raft.LogType) *raft.Log {
	l := &raft.Log{Index: h.next, Term: h.term, Type: typ}
	h.next++
	return l
}

// apply applies the commands as one batch and returns their results.
func (h *harness) apply(cmds ...*Command) []*Result {
	h.t.Helper()
	return applyLogs(h.t, h.f, h.logs(cmds...))
}

func (h *harness) apply1(c *Command) *Result {
	h.t.Helper()
	return h.apply(c)[0]
}

// applyLogs runs ApplyBatch and converts its responses; entries that were
// skipped or are not commands give nil.
func applyLogs(t testing.TB, f *FSM, logs []*raft.Log) []*Result {
	t.Helper()
	resps := f.ApplyBatch(logs)
	if len(resps) != len(logs) {
		t.Fatalf("ApplyBatch returned %d responses for %d logs", len(resps), len(logs))
	}
	out := make([]*Result, len(resps))
	for i, r := range resps {
		if r == nil {
			continue
		}
		res, ok := r.(*Result)
		if !ok {
			t.Fatalf("response %d is %T, want *Result", i, r)
		}
		switch {
		case res.Replay:
			// A replay reports the index its original took effect at.
			if res.Index == 0 || res.Index >= logs[i].Index {
				t.Fatalf("replayed response %d has Index %d, want an earlier index than %d", i, res.Index, logs[i].Index)
			}
		case res.Code == CodeIdempotencyReused:
			// Took effect nowhere; the index is not meaningful.
		case res.Index != logs[i].Index:
			t.Fatalf("response %d has Index %d, want %d", i, res.Index, logs[i].Index)
		}
		out[i] = res
	}
	return out
}

// register creates an account and returns its id.
func (h *harness) register(username string) uint64 {
	h.t.Helper()
	r := h.apply1(&Command{Type: TypeRegister, Username: username, PassHash: []byte("hash-" + username), Name: "N " + username, Email: username + "@example.com"})
	wantCode(h.t, r, CodeOK)
	return r.Account.ID
}

func deposit(acct uint64, cents trader.Cents) *Command {
	return &Command{Type: TypeDeposit, Account: acct, Amount: int64(cents)}
}

func withdraw(acct uint64, cents trader.Cents) *Command {
	return &Command{Type: TypeWithdraw, Account: acct, Amount: int64(cents)}
}

func keyed(c *Command, key string) *Command { c.Key = key; return c }

func at(c *Command, tm int64) *Command { c.Time = tm; return c }

func wantCode(t testing.TB, r *Result, code string) {
	t.Helper()
	if r == nil {
		t.Fatalf("nil result, want code %q", code)
	}
	if r.Code != code {
		t.Fatalf("result code %q (%s), want %q", r.Code, r.Message, code)
	}
	if code == CodeOK && r.Err() != nil {
		t.Fatalf("OK result has Err() = %v", r.Err())
	}
	if code != CodeOK && r.Err() == nil {
		t.Fatalf("rejected result %q has nil Err()", code)
	}
}

func account(t testing.TB, f *FSM, id uint64) (*trader.Account, bool) {
	t.Helper()
	var a *trader.Account
	var ok bool
	if err := f.View(func(v *View) error { a, ok = v.Account(id); return nil }); err != nil {
		t.Fatalf("View: %v", err)
	}
	return a, ok
}

func cash(t testing.TB, f *FSM, id uint64) trader.Cents {
	t.Helper()
	a, ok := account(t, f, id)
	if !ok {
		t.Fatalf("account %d does not exist", id)
	}
	return a.Cash
}

func hashOf(t testing.TB, f *FSM) string {
	t.Helper()
	h, idx, err := f.Hash()
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if idx != f.AppliedIndex() {
		t.Fatalf("Hash index %d != AppliedIndex %d", idx, f.AppliedIndex())
	}
	return h
}

func session(t testing.TB, f *FSM, tokenHash []byte) (Session, bool) {
	t.Helper()
	var s Session
	var ok bool
	if err := f.View(func(v *View) error { s, ok = v.Session(tokenHash); return nil }); err != nil {
		t.Fatalf("View: %v", err)
	}
	return s, ok
}

func tok(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func countAccounts(t testing.TB, f *FSM) (int, trader.Cents) {
	t.Helper()
	var n int
	var total trader.Cents
	if err := f.View(func(v *View) error { n, total = v.CountAccounts(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n, total
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failWrite         error
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrite != nil {
		return 0, s.failWrite
	}
	return s.Buffer.Write(p)
}

var _ raft.SnapshotSink = (*memSink)(nil)

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist: sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// waitResult polls a result channel until a generous deadline.
func waitResult(t testing.TB, ch <-chan bool, what string) bool {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: did not return", what)
		return false
	}
}

func expectPanic(t *testing.T, what string, fn func()) (msg string) {
	t.Helper()
	defer func() {
		r := recover()
		if r == nil {
			t.Fatalf("%s: did not panic", what)
		}
		msg = fmt.Sprint(r)
	}()
	fn()
	return ""
}

// ----------------------------------------------------------- per command

func TestRegister(t *testing.T) {
	good := func() *Command {
		return &Command{Type: TypeRegister, Username: "bob", PassHash: []byte("bcrypt-bob"), Name: "Bob Ray", Email: "bob@example.com"}
	}
	tests := []struct {
		name   string
		mutate func(c *Command)
		code   string
	}{
		{"success", func(c *Command) {}, CodeOK},
		{"usernames are case-sensitive", func(c *Command) { c.Username = "Ann" }, CodeOK},
		{"empty name and email allowed", func(c *Command) { c.Name, c.Email = "", "" }, CodeOK},
		{"username taken", func(c *Command) { c.Username = "ann" }, CodeUsernameTaken},
		{"bad username", func(c *Command) { c.Username = "b!" }, CodeBadField},
		{"bad email", func(c *Command) { c.Email = "not-an-email" }, CodeBadField},
		{"bad name", func(c *Command) { c.Name = "Bob\x00" }, CodeBadField},
		{"empty password hash", func(c *Command) { c.PassHash = nil }, CodeInvalidCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			annID := h.register("ann")
			before := hashOf(t, h.f)
			c := good()
			tt.mutate(c)
			c.Time = t0 + 12345
			r := h.apply1(c)
			wantCode(t, r, tt.code)
			n, _ := countAccounts(t, h.f)
			if tt.code != CodeOK {
				if r.Account != nil {
					t.Errorf("rejected register returned account %+v", r.Account)
				}
				if after := hashOf(t, h.f); after != before {
					t.Errorf("rejected register changed state")
				}
				if n != 1 {
					t.Errorf("%d accounts after a rejected register, want 1", n)
				}
				// The rejected command did not consume an account id.
				if id := h.register("carol"); id != annID+1 {
					t.Errorf("next account id = %d, want %d", id, annID+1)
				}
				return
			}
			want := &trader.Account{ID: annID + 1, Username: c.Username, Name: c.Name, Email: c.Email, CreatedAt: c.Time}
			if !reflect.DeepEqual(r.Account, want) {
				t.Errorf("result account = %+v, want %+v", r.Account, want)
			}
			var got *trader.Account
			var pass []byte
			var ok bool
			_ = h.f.View(func(v *View) error { got, pass, ok = v.AccountByUsername(c.Username); return nil })
			if !ok || !reflect.DeepEqual(got, want) || !bytes.Equal(pass, c.PassHash) {
				t.Errorf("AccountByUsername = %+v, %q, %v; want %+v, %q", got, pass, ok, want, c.PassHash)
			}
			if byID, ok := account(t, h.f, want.ID); !ok || !reflect.DeepEqual(byID, want) {
				t.Errorf("Account(%d) = %+v, %v", want.ID, byID, ok)
			}
			if n != 2 {
				t.Errorf("%d accounts, want 2", n)
			}
		})
	}
}

func TestCreateSession(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		h := newHarness(t)
		id := h.register("ann")
		exp := t0 + int64(time.Hour)
		r := h.apply1(&Command{Type: TypeCreateSession, Time: t0 + 7, Username: "ann", TokenHash: tok("s1"), Expires: exp})
		wantCode(t, r, CodeOK)
		if r.Account == nil || r.Account.ID != id {
			t.Fatalf("result account = %+v, want id %d", r.Account, id)
		}
		s, ok := session(t, h.f, tok("s1"))
		if want := (Session{Account: id, Expires: exp, Created: t0 + 7}); !ok || s != want {
			t.Fatalf("Session = %+v, %v; want %+v", s, ok, want)
		}
		if _, ok := session(t, h.f, tok("other")); ok {
			t.Fatalf("unrelated token found")
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		h := newHarness(t)
		h.register("ann")
		before := hashOf(t, h.f)
		r := h.apply1(&Command{Type: TypeCreateSession, Username: "nobody", TokenHash: tok("s1"), Expires: t0 + 1e12})
		wantCode(t, r, CodeUnknownUser)
		if !errors.Is(r.Err(), ErrUnknownUser) {
			t.Errorf("Err() = %v", r.Err())
		}
		if _, ok := session(t, h.f, tok("s1")); ok {
			t.Errorf("session stored for unknown user")
		}
		if hashOf(t, h.f) != before {
			t.Errorf("state changed")
		}
	})
	t.Run("bad token hash", func(t *testing.T) {
		h := newHarness(t)
		h.register("ann")
		before := hashOf(t, h.f)
		r := h.apply1(&Command{Type: TypeCreateSession, Username: "ann", TokenHash: []byte("short"), Expires: t0 + 1e12})
		wantCode(t, r, CodeInvalidCommand)
		if hashOf(t, h.f) != before {
			t.Errorf("state changed")
		}
	})
}

func TestExpiredSessionsArePruned(t *testing.T) {
	h := newHarness(t)
	h.register("ann")
	h.apply(
		&Command{Type: TypeCreateSession, Time: t0, Username: "ann", TokenHash: tok("short-lived"), Expires: t0 + 10},
		&Command{Type: TypeCreateSession, Time: t0 + 1, Username: "ann", TokenHash: tok("long-lived"), Expires: t0 + int64(time.Hour)},
	)
	if _, ok := session(t, h.f, tok("short-lived")); !ok {
		t.Fatal("short-lived session missing before expiry")
	}
	wantCode(t, h.apply1(&Command{Type: TypeCreateSession, Time: t0 + 20, Username: "ann", TokenHash: tok("new"), Expires: t0 + int64(time.Hour)}), CodeOK)
	if _, ok := session(t, h.f, tok("short-lived")); ok {
		t.Error("expired session survived a later login")
	}
	for _, s := range []string{"long-lived", "new"} {
		if _, ok := session(t, h.f, tok(s)); !ok {
			t.Errorf("live session %q was pruned", s)
		}
	}
}

func TestRevokeSession(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	bob := h.register("bob")
	wantCode(t, h.apply1(&Command{Type: TypeCreateSession, Username: "ann", TokenHash: tok("s"), Expires: t0 + int64(time.Hour)}), CodeOK)

	steps := []struct {
		name    string
		account uint64
		token   []byte
		code    string
		present bool // session exists afterwards
	}{
		{"wrong account", bob, tok("s"), CodeUnknownSession, true},
		{"anonymous", 0, tok("s"), CodeUnknownSession, true},
		{"unknown token", ann, tok("nope"), CodeUnknownSession, true},
		{"empty token", ann, nil, CodeUnknownSession, true},
		{"owner", ann, tok("s"), CodeOK, false},
		{"already revoked", ann, tok("s"), CodeUnknownSession, false},
	}
	for _, st := range steps {
		before := hashOf(t, h.f)
		r := h.apply1(&Command{Type: TypeRevokeSession, Account: st.account, TokenHash: st.token})
		if r.Code != st.code {
			t.Fatalf("%s: code %q, want %q", st.name, r.Code, st.code)
		}
		if _, ok := session(t, h.f, tok("s")); ok != st.present {
			t.Fatalf("%s: session present = %v, want %v", st.name, ok, st.present)
		}
		if st.code != CodeOK && hashOf(t, h.f) != before {
			t.Fatalf("%s: rejected revoke changed state", st.name)
		}
	}
}

func TestDepositWithdraw(t *testing.T) {
	const start trader.Cents = 10000 // 100.00
	tests := []struct {
		name     string
		cmd      func(ann uint64) *Command
		code     string
		wantCash trader.Cents
	}{
		{"deposit", func(a uint64) *Command { return deposit(a, 5025) }, CodeOK, 15025},
		{"deposit max amount", func(a uint64) *Command { return deposit(a, trader.MaxAmount) }, CodeOK, start + trader.MaxAmount},
		{"withdraw", func(a uint64) *Command { return withdraw(a, 4000) }, CodeOK, 6000},
		{"withdraw everything", func(a uint64) *Command { return withdraw(a, start) }, CodeOK, 0},
		{"insufficient funds", func(a uint64) *Command { return withdraw(a, start+1) }, CodeInsufficientFunds, start},
		{"deposit zero", func(a uint64) *Command { return deposit(a, 0) }, CodeBadAmount, start},
		{"deposit negative", func(a uint64) *Command { return deposit(a, -500) }, CodeBadAmount, start},
		{"deposit over max", func(a uint64) *Command { return deposit(a, trader.MaxAmount+1) }, CodeBadAmount, start},
		{"withdraw negative", func(a uint64) *Command { return withdraw(a, -500) }, CodeBadAmount, start},
		{"withdraw zero", func(a uint64) *Command { return withdraw(a, 0) }, CodeBadAmount, start},
		{"deposit unknown account", func(a uint64) *Command { return deposit(a+100, 5) }, CodeUnknownAccount, start},
		{"withdraw unknown account", func(a uint64) *Command { return withdraw(a+100, 5) }, CodeUnknownAccount, start},
		{"deposit anonymous", func(a uint64) *Command { return deposit(0, 5) }, CodeUnknownAccount, start},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ann := h.register("ann")
			h.register("bob")
			wantCode(t, h.apply1(deposit(ann, start)), CodeOK)
			before := hashOf(t, h.f)
			r := h.apply1(tt.cmd(ann))
			wantCode(t, r, tt.code)
			if got := cash(t, h.f, ann); got != tt.wantCash {
				t.Errorf("cash = %s, want %s", got, tt.wantCash)
			}
			if _, total := countAccounts(t, h.f); total != tt.wantCash {
				t.Errorf("total cash = %s, want %s (money not conserved)", total, tt.wantCash)
			}
			if tt.code == CodeOK {
				if r.Account == nil || r.Account.Cash != tt.wantCash || r.Account.ID != ann {
					t.Errorf("result account = %+v, want cash %s", r.Account, tt.wantCash)
				}
			} else if hashOf(t, h.f) != before {
				t.Errorf("rejected command changed state")
			}
		})
	}
}

func TestProfile(t *testing.T) {
	tests := []struct {
		name      string
		cmd       Command
		code      string
		wantName  string
		wantEmail string
	}{
		{"set name", Command{SetName: true, Name: "Ann B"}, CodeOK, "Ann B", "ann@example.com"},
		{"set email", Command{SetEmail: true, Email: "b@example.com"}, CodeOK, "Ann", "b@example.com"},
		{"set both", Command{SetName: true, Name: "X", SetEmail: true, Email: "x@example.com"}, CodeOK, "X", "x@example.com"},
		{"clear both", Command{SetName: true, SetEmail: true}, CodeOK, "", ""},
		{"fields without flags are ignored", Command{Name: "Ignored", Email: "ignored@example.com"}, CodeOK, "Ann", "ann@example.com"},
		{"bad email keeps valid name unchanged", Command{SetName: true, Name: "New", SetEmail: true, Email: "bad"}, CodeBadField, "Ann", "ann@example.com"},
		{"bad name", Command{SetName: true, Name: "A\nB"}, CodeBadField, "Ann", "ann@example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			r := h.apply1(&Command{Type: TypeRegister, Username: "ann", PassHash: []byte("p"), Name: "Ann", Email: "ann@example.com"})
			wantCode(t, r, CodeOK)
			ann := r.Account.ID
			before := hashOf(t, h.f)
			c := tt.cmd
			c.Type, c.Account = TypeProfile, ann
			r = h.apply1(&c)
			wantCode(t, r, tt.code)
			a, _ := account(t, h.f, ann)
			if a.Name != tt.wantName || a.Email != tt.wantEmail {
				t.Errorf("name, email = %q, %q; want %q, %q", a.Name, a.Email, tt.wantName, tt.wantEmail)
			}
			if a.Username != "ann" {
				t.Errorf("username changed to %q", a.Username)
			}
			if tt.code == CodeOK && !reflect.DeepEqual(r.Account, a) {
				t.Errorf("result account %+v != stored %+v", r.Account, a)
			}
			if tt.code != CodeOK && hashOf(t, h.f) != before {
				t.Errorf("rejected profile changed state")
			}
		})
	}
	t.Run("unknown account", func(t *testing.T) {
		h := newHarness(t)
		h.register("ann")
		before := hashOf(t, h.f)
		wantCode(t, h.apply1(&Command{Type: TypeProfile, Account: 99, SetName: true, Name: "X"}), CodeUnknownAccount)
		if hashOf(t, h.f) != before {
			t.Errorf("state changed")
		}
	})
}

func clusterKey(t testing.TB, f *FSM) string {
	var k string
	_ = f.View(func(v *View) error { k = v.ClusterKey(); return nil })
	return k
}

func TestInitCluster(t *testing.T) {
	h := newHarness(t)
	if k := clusterKey(t, h.f); k != "" {
		t.Fatalf("fresh cluster key = %q", k)
	}
	wantCode(t, h.apply1(&Command{Type: TypeInitCluster}), CodeInvalidCommand)
	if k := clusterKey(t, h.f); k != "" {
		t.Fatalf("empty init stored key %q", k)
	}
	wantCode(t, h.apply1(&Command{Type: TypeInitCluster, ClusterKey: "first"}), CodeOK)
	if k := clusterKey(t, h.f); k != "first" {
		t.Fatalf("cluster key = %q, want first", k)
	}
	before := hashOf(t, h.f)
	r := h.apply1(&Command{Type: TypeInitCluster, ClusterKey: "second"})
	wantCode(t, r, CodeAlreadyInitialized)
	if !errors.Is(r.Err(), ErrAlreadyInitialized) {
		t.Errorf("Err() = %v", r.Err())
	}
	if k := clusterKey(t, h.f); k != "first" {
		t.Fatalf("second init replaced the key with %q", k)
	}
	if hashOf(t, h.f) != before {
		t.Fatalf("second init changed state")
	}
}

func nodes(t testing.TB, f *FSM) []NodeAddrs {
	var out []NodeAddrs
	_ = f.View(func(v *View) error { out = v.Nodes(); return nil })
	return out
}

func node(t testing.TB, f *FSM, id string) (NodeAddrs, bool) {
	var n NodeAddrs
	var ok bool
	_ = f.View(func(v *View) error { n, ok = v.Node(id); return nil })
	return n, ok
}

func TestSetRemoveNode(t *testing.T) {
	h := newHarness(t)
	set := func(id, raftAddr, httpAddr string) *Command {
		return &Command{Type: TypeSetNode, NodeID: id, RaftAddr: raftAddr, HTTPAddr: httpAddr}
	}
	for _, r := range h.apply(set("n2", "h2:7000", "h2:8000"), set("n1", "h1:7000", "h1:8000")) {
		wantCode(t, r, CodeOK)
	}
	want := []NodeAddrs{{"n1", "h1:7000", "h1:8000", ""}, {"n2", "h2:7000", "h2:8000", ""}}
	if got := nodes(t, h.f); !reflect.DeepEqual(got, want) {
		t.Fatalf("Nodes = %+v, want %+v (ID order)", got, want)
	}

	wantCode(t, h.apply1(set("n1", "h1b:7001", "h1b:8001")), CodeOK)
	if n, ok := node(t, h.f, "n1"); !ok || n != (NodeAddrs{"n1", "h1b:7001", "h1b:8001", ""}) {
		t.Fatalf("after re-set Node(n1) = %+v, %v", n, ok)
	}
	if got := len(nodes(t, h.f)); got != 2 {
		t.Fatalf("re-set duplicated a node: %d nodes", got)
	}

	before := hashOf(t, h.f)
	wantCode(t, h.apply1(set("", "x:1", "x:2")), CodeInvalidCommand)
	if hashOf(t, h.f) != before {
		t.Fatalf("rejected set_node changed state")
	}

	wantCode(t, h.apply1(&Command{Type: TypeRemoveNode, NodeID: "n1"}), CodeOK)
	if _, ok := node(t, h.f, "n1"); ok {
		t.Fatalf("n1 still present after remove")
	}
	if got := nodes(t, h.f); !reflect.DeepEqual(got, want[1:]) {
		t.Fatalf("Nodes after remove = %+v", got)
	}
	before = hashOf(t, h.f)
	wantCode(t, h.apply1(&Command{Type: TypeRemoveNode, NodeID: "ghost"}), CodeOK)
	if hashOf(t, h.f) != before {
		t.Fatalf("removing an unknown node changed state")
	}
}

// ------------------------------------------------------------ idempotency

func TestIdempotentRetryReplaysFirstResult(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	first := h.apply1(keyed(at(deposit(ann, 10000), t0+100), "dep-1"))
	wantCode(t, first, CodeOK)
	if first.Replay {
		t.Fatal("first application marked as replay")
	}
	// An unrelated change in between, so re-execution and replay differ.
	wantCode(t, h.apply1(deposit(ann, 100)), CodeOK)

	// The retry is stamped later by a (possibly different) leader.
	retry := h.apply1(keyed(at(deposit(ann, 10000), t0+int64(time.Minute)), "dep-1"))
	wantCode(t, retry, CodeOK)
	if !retry.Replay {
		t.Fatal("retry not marked as replay")
	}
	if retry.Index != first.Index {
		t.Fatalf("replay Index = %d, want the first application's %d", retry.Index, first.Index)
	}
	if !reflect.DeepEqual(retry.Account, first.Account) || retry.Message != first.Message {
		t.Fatalf("replay = %+v (account %+v), want the first result %+v (account %+v)", retry, retry.Account, first, first.Account)
	}
	if got := cash(t, h.f, ann); got != 10100 {
		t.Fatalf("cash = %s, want 101.00: the deposit was applied twice or not at all", got)
	}
	// A third retry in the same batch as a new deposit: still only once.
	rs := h.apply(keyed(deposit(ann, 10000), "dep-1"), keyed(deposit(ann, 1), "dep-2"))
	if !rs[0].Replay || rs[1].Replay {
		t.Fatalf("replay flags = %v, %v; want true, false", rs[0].Replay, rs[1].Replay)
	}
	if got := cash(t, h.f, ann); got != 10101 {
		t.Fatalf("cash = %s, want 101.01", got)
	}
}

func TestIdempotentRejectionReplays(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	first := h.apply1(keyed(withdraw(ann, 5000), "w-1"))
	wantCode(t, first, CodeInsufficientFunds)
	wantCode(t, h.apply1(deposit(ann, 10000)), CodeOK)
	// The original outcome stands: the retry must not withdraw now that
	// funds exist.
	retry := h.apply1(keyed(withdraw(ann, 5000), "w-1"))
	wantCode(t, retry, CodeInsufficientFunds)
	if !retry.Replay {
		t.Fatal("retry of a rejected command not marked as replay")
	}
	if got := cash(t, h.f, ann); got != 10000 {
		t.Fatalf("cash = %s, want 100.00", got)
	}
}

func TestIdempotencyKeyReusedForDifferentRequest(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	wantCode(t, h.apply1(keyed(deposit(ann, 10000), "k")), CodeOK)
	for _, c := range []*Command{
		keyed(deposit(ann, 10001), "k"),  // different amount
		keyed(withdraw(ann, 10000), "k"), // different type
		keyed(&Command{Type: TypeProfile, Account: ann, SetName: true, Name: "X"}, "k"),
	} {
		before := hashOf(t, h.f)
		r := h.apply1(c)
		wantCode(t, r, CodeIdempotencyReused)
		if !errors.Is(r.Err(), ErrIdempotencyReused) {
			t.Fatalf("Err() = %v", r.Err())
		}
		if r.Replay {
			t.Fatal("reused key reported as replay")
		}
		if hashOf(t, h.f) != before {
			t.Fatalf("reused key (%s) changed state", c.Type)
		}
	}
	if got := cash(t, h.f, ann); got != 10000 {
		t.Fatalf("cash = %s, want 100.00", got)
	}
	// The original request still replays.
	if r := h.apply1(keyed(deposit(ann, 10000), "k")); !r.Replay || r.Code != CodeOK {
		t.Fatalf("original retry after reuse = %+v", r)
	}
}

func TestIdempotencyKeysAreScopedByAccount(t *testing.T) {
	h := newHarness(t)
	ann, bob := h.register("ann"), h.register("bob")
	ra := h.apply1(keyed(deposit(ann, 100), "same"))
	rb := h.apply1(keyed(deposit(bob, 100), "same"))
	wantCode(t, ra, CodeOK)
	wantCode(t, rb, CodeOK)
	if ra.Replay || rb.Replay {
		t.Fatal("a key of one account replayed for another")
	}
	if cash(t, h.f, ann) != 100 || cash(t, h.f, bob) != 100 {
		t.Fatalf("cash = %s, %s; want 1.00 each", cash(t, h.f, ann), cash(t, h.f, bob))
	}
}

func TestIdempotentRegisterRetryWithNewSalt(t *testing.T) {
	h := newHarness(t)
	reg := func(pass string) *Command {
		return keyed(&Command{Type: TypeRegister, Username: "ann", PassHash: []byte(pass), Email: "ann@example.com"}, "reg-1")
	}
	first := h.apply1(reg("bcrypt-salt-1"))
	wantCode(t, first, CodeOK)
	retry := h.apply1(reg("bcrypt-salt-2"))
	wantCode(t, retry, CodeOK) // not username_taken
	if !retry.Replay || !reflect.DeepEqual(retry.Account, first.Account) {
		t.Fatalf("retry = %+v account %+v; want replay of %+v", retry, retry.Account, first.Account)
	}
	if n, _ := countAccounts(t, h.f); n != 1 {
		t.Fatalf("%d accounts, want 1", n)
	}
	var pass []byte
	_ = h.f.View(func(v *View) error { _, pass, _ = v.AccountByUsername("ann"); return nil })
	if string(pass) != "bcrypt-salt-1" {
		t.Fatalf("stored password hash = %q, want the first one", pass)
	}
	// A different registration under the same anonymous key is a reuse.
	other := reg("x")
	other.Username = "bob"
	wantCode(t, h.apply1(other), CodeIdempotencyReused)
}

func TestIdempotencyRecordsExpire(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	ttl := int64(IdempotencyTTL)
	wantCode(t, h.apply1(keyed(at(deposit(ann, 10000), t0), "old")), CodeOK)
	wantCode(t, h.apply1(keyed(at(deposit(ann, 1000), t0+int64(time.Hour)), "young")), CodeOK)

	// Before any later keyed command, the old record still answers.
	if r := h.apply1(keyed(at(deposit(ann, 10000), t0+ttl-1), "old")); !r.Replay {
		t.Fatal("record replay failed within the TTL")
	}
	// A keyed command stamped past the TTL prunes records older than it.
	wantCode(t, h.apply1(keyed(at(deposit(ann, 1), t0+ttl+int64(time.Second)), "trigger")), CodeOK)
	if got := cash(t, h.f, ann); got != 11001 {
		t.Fatalf("cash = %s, want 110.01", got)
	}
	r := h.apply1(keyed(at(deposit(ann, 10000), t0+ttl+2*int64(time.Second)), "old"))
	wantCode(t, r, CodeOK)
	if r.Replay {
		t.Fatal("expired record still replayed")
	}
	if got := cash(t, h.f, ann); got != 21001 {
		t.Fatalf("cash = %s, want 210.01: the expired key did not apply again", got)
	}
	// The younger record is still within its TTL and must replay.
	r = h.apply1(keyed(at(deposit(ann, 1000), t0+ttl+3*int64(time.Second)), "young"))
	if !r.Replay {
		t.Fatal("record younger than the TTL was pruned")
	}
	if got := cash(t, h.f, ann); got != 21001 {
		t.Fatalf("cash = %s, want 210.01", got)
	}
}

func TestIdempotencyPruningEventuallyRemovesAll(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	const n = 3*maxPrunePerCommand + 1
	var cmds []*Command
	for i := 0; i < n; i++ {
		cmds = append(cmds, keyed(at(deposit(ann, 1), t0+int64(i)), fmt.Sprintf("old-%d", i)))
	}
	h.apply(cmds...)
	later := t0 + int64(IdempotencyTTL) + int64(time.Hour)
	for i := 0; i < n; i++ { // plenty of keyed commands after the TTL
		wantCode(t, h.apply1(keyed(at(deposit(ann, 1), later+int64(i)), fmt.Sprintf("trigger-%d", i))), CodeOK)
	}
	before := cash(t, h.f, ann)
	for i := 0; i < n; i++ {
		r := h.apply1(keyed(at(deposit(ann, 1), later+int64(time.Minute)+int64(i)), fmt.Sprintf("old-%d", i)))
		if r.Replay {
			t.Fatalf("old-%d was never pruned", i)
		}
	}
	if got := cash(t, h.f, ann); got != before+n {
		t.Fatalf("cash = %s, want %s", got, before+n)
	}
}

// ----------------------------------------------------- batches and restart

func TestRejectedCommandsInBatchLeaveNoPartialWrites(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	t1, t2 := int64(5e18), int64(5e18)+1 // fixed times: statements record them
	rs := h.apply(
		at(deposit(ann, 1000), t1),
		withdraw(ann, 1_000_000),
		at(deposit(ann, 500), t2),
		&Command{Type: TypeProfile, Account: ann, SetName: true, Name: "Valid", SetEmail: true, Email: "invalid"},
		&Command{Type: TypeRegister, Username: "bob", PassHash: []byte("p"), Email: "invalid"},
		&Command{Type: TypeCreateSession, Username: "ann", TokenHash: []byte("short")},
	)
	codes := []string{CodeOK, CodeInsufficientFunds, CodeOK, CodeBadField, CodeBadField, CodeInvalidCommand}
	for i, r := range rs {
		wantCode(t, r, codes[i])
	}
	if got := cash(t, h.f, ann); got != 1500 {
		t.Fatalf("cash = %s, want 15.00 (only the two deposits)", got)
	}
	// Compare the whole state with a replica that only saw the successes.
	ref := newHarness(t)
	ref.register("ann")
	ref.apply(at(deposit(ann, 1000), t1), at(deposit(ann, 500), t2))
	if hashOf(t, h.f) != hashOf(t, ref.f) {
		t.Fatal("rejected commands left writes behind")
	}
}

func TestRestartReplayAppliesNothingTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f, next: 1, term: 2, now: t0}
	batches := [][]*raft.Log{
		h.logs(&Command{Type: TypeInitCluster, ClusterKey: "k"}, &Command{Type: TypeRegister, Username: "ann", PassHash: []byte("p")}),
		h.logs(deposit(1, 10000), keyed(deposit(1, 500), "once"), withdraw(1, 2500)),
		{h.entry(raft.LogConfiguration), h.entry(raft.LogNoop)},
		h.logs(&Command{Type: TypeCreateSession, Username: "ann", TokenHash: tok("s"), Expires: t0 + int64(time.Hour)}, deposit(1, 1)),
	}
	for _, b := range batches {
		applyLogs(t, f, b)
	}
	wantApplied := h.next - 1
	if f.CommandsApplied() != 7 {
		t.Fatalf("CommandsApplied = %d, want 7", f.CommandsApplied())
	}
	wantHash := hashOf(t, f)
	wantCash := cash(t, f, 1)
	if wantCash != 8001 {
		t.Fatalf("cash = %s, want 80.01", wantCash)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f2 := mustOpenPath(t, path)
	if f2.AppliedIndex() != wantApplied {
		t.Fatalf("reopened AppliedIndex = %d, want %d", f2.AppliedIndex(), wantApplied)
	}
	// Raft replays the log from its last snapshot (here: from the start).
	for _, b := range batches {
		for i, r := range f2.ApplyBatch(b) {
			if r != nil {
				t.Fatalf("replayed entry %d answered %+v, want nil (skipped)", b[i].Index, r)
			}
		}
	}
	if n := f2.CommandsApplied(); n != 0 {
		t.Fatalf("CommandsApplied after replay = %d, want 0", n)
	}
	if got := cash(t, f2, 1); got != wantCash {
		t.Fatalf("cash after replay = %s, want %s", got, wantCash)
	}
	if hashOf(t, f2) != wantHash || f2.AppliedIndex() != wantApplied {
		t.Fatal("replay changed state or applied index")
	}

	// A batch straddling the restart point applies only the new entries.
	h.f = f2
	straddle := append(append([]*raft.Log{}, batches[3]...), h.logs(deposit(1, 7))...)
	rs := applyLogs(t, f2, straddle)
	if rs[0] != nil || rs[1] != nil || rs[2] == nil {
		t.Fatalf("straddling batch responses = %v", rs)
	}
	if f2.CommandsApplied() != 1 || cash(t, f2, 1) != wantCash+7 {
		t.Fatalf("CommandsApplied = %d, cash = %s; want 1, %s", f2.CommandsApplied(), cash(t, f2, 1), wantCash+7)
	}
	if f2.AppliedIndex() != wantApplied+1 {
		t.Fatalf("AppliedIndex = %d, want %d", f2.AppliedIndex(), wantApplied+1)
	}
}

func TestAppliedIndexAndTermSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("fresh AppliedIndex = %d", f.AppliedIndex())
	}
	h := &harness{t: t, f: f, next: 41, term: 7, now: t0}
	h.apply(&Command{Type: TypeRegister, Username: "ann", PassHash: []byte("p")}, deposit(1, 5))
	if f.AppliedIndex() != 42 {
		t.Fatalf("AppliedIndex = %d, want 42", f.AppliedIndex())
	}
	f.Close()

	f2 := mustOpenPath(t, path)
	var idx, term uint64
	_ = f2.View(func(v *View) error {
		idx, term = v.AppliedIndex(), getU64(v.tx.Bucket(bMeta), kAppliedTerm)
		return nil
	})
	if f2.AppliedIndex() != 42 || idx != 42 || term != 7 {
		t.Fatalf("after reopen AppliedIndex = %d, view index = %d, term = %d; want 42, 42, 7", f2.AppliedIndex(), idx, term)
	}
	if cash(t, f2, 1) != 5 {
		t.Fatalf("state lost across reopen")
	}
}

func TestUndecodableEntryPanics(t *testing.T) {
	valid := Encode(&Command{Type: TypeDeposit, Account: 1, Amount: 5, Time: t0})
	for name, data := range map[string][]byte{
		"empty":        nil,
		"unknown type": {0xee, 0, 0, 0},
		"truncated":    valid[:len(valid)-1],
		"trailing":     append(bytes.Clone(valid), 0),
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			ann := h.register("ann")
			beforeIdx, beforeHash, beforeN := h.f.AppliedIndex(), hashOf(t, h.f), h.f.CommandsApplied()
			good := h.logs(deposit(ann, 100))[0]
			bad := &raft.Log{Index: h.next, Term: h.term, Type: raft.LogCommand, Data: data}
			msg := expectPanic(t, "ApplyBatch with an undecodable entry", func() {
				h.f.ApplyBatch([]*raft.Log{good, bad})
			})
			if !strings.Contains(msg, "undecodable") || !strings.Contains(msg, fmt.Sprint(bad.Index)) {
				t.Errorf("panic message %q does not name the problem and index", msg)
			}
			// Nothing of the batch may be committed: the node stops here.
			if h.f.AppliedIndex() != beforeIdx || hashOf(t, h.f) != beforeHash || h.f.CommandsApplied() != beforeN {
				t.Fatalf("panicking batch left partial effects")
			}
			// The state file is still consistent and usable.
			applyLogs(t, h.f, []*raft.Log{good})
			if cash(t, h.f, ann) != 100 {
				t.Fatalf("FSM unusable after recovered panic")
			}
		})
	}
}

// With deferred commit, a panicking batch may follow commands that are
// applied but not yet committed. The panic path rolls all of them back to
// what the file holds, so the state stays consistent, and applying the
// lost entries again (as the Raft log does after the node restarts)
// restores them exactly once.
func TestPanicDropsUncommittedAppliedState(t *testing.T) {
	h := &harness{t: t, f: mustOpenOpts(t, Options{CommitInterval: time.Hour}), next: 1, term: 1, now: t0}
	ann := h.register("ann")
	if err := h.f.Flush(); err != nil {
		t.Fatal(err)
	}
	committed := h.f.AppliedIndex()
	commitsBefore := h.f.Commits()
	lost := h.logs(deposit(ann, 7))
	applyLogs(t, h.f, lost)
	if cash(t, h.f, ann) != 7 || h.f.Commits() != commitsBefore {
		t.Fatalf("deposit not visible before commit, or committed early (commits %d -> %d)", commitsBefore, h.f.Commits())
	}
	good := h.logs(deposit(ann, 100))[0]
	bad := &raft.Log{Index: h.next, Term: h.term, Type: raft.LogCommand, Data: []byte{0xee}}
	expectPanic(t, "ApplyBatch with an undecodable entry", func() { h.f.ApplyBatch([]*raft.Log{good, bad}) })
	if h.f.AppliedIndex() != committed || cash(t, h.f, ann) != 0 {
		t.Fatalf("after the panic: applied %d (want committed %d), cash %s (want 0)", h.f.AppliedIndex(), committed, cash(t, h.f, ann))
	}
	applyLogs(t, h.f, append(lost, good))
	if cash(t, h.f, ann) != 107 {
		t.Fatalf("replayed entries: cash %s, want 1.07", cash(t, h.f, ann))
	}
	// The statement's sequence continues from the file, not from the
	// rolled-back transaction: 1, 2 with no gap.
	var seqs []uint64
	_ = h.f.View(func(v *View) error {
		for _, e := range v.Statement(ann, 0, 10) {
			seqs = append(seqs, e.Seq)
		}
		return nil
	})
	if !slices.Equal(seqs, []uint64{1, 2}) {
		t.Fatalf("statement sequences %v after rollback and replay, want [1 2]", seqs)
	}
}

func TestNonCommandLogsAdvanceIndexOnly(t *testing.T) {
	h := newHarness(t)
	h.register("ann")
	beforeHash, beforeN := hashOf(t, h.f), h.f.CommandsApplied()
	for _, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogBarrier} {
		l := h.entry(typ)
		l.Data = []byte("not a command")
		if r := h.f.Apply(l); r != nil {
			t.Fatalf("%v entry answered %+v, want nil", typ, r)
		}
		if h.f.AppliedIndex() != l.Index {
			t.Fatalf("%v entry: AppliedIndex = %d, want %d", typ, h.f.AppliedIndex(), l.Index)
		}
	}
	if hashOf(t, h.f) != beforeHash || h.f.CommandsApplied() != beforeN {
		t.Fatal("non-command entries changed state or were counted")
	}
	// A mixed batch: responses line up with entries.
	logs := append(h.logs(deposit(1, 5)), h.entry(raft.LogConfiguration))
	logs = append(logs, h.logs(deposit(1, 6))...)
	rs := applyLogs(t, h.f, logs)
	if rs[0] == nil || rs[1] != nil || rs[2] == nil {
		t.Fatalf("responses = %v", rs)
	}
	if h.f.AppliedIndex() != logs[2].Index || cash(t, h.f, 1) != 11 {
		t.Fatalf("AppliedIndex = %d, cash = %s", h.f.AppliedIndex(), cash(t, h.f, 1))
	}
}

func TestApplySingleMatchesBatch(t *testing.T) {
	h := newHarness(t)
	h.register("ann")
	l := h.logs(deposit(1, 5))[0]
	r, ok := h.f.Apply(l).(*Result)
	if !ok || r.Code != CodeOK || r.Index != l.Index || r.Account.Cash != 5 {
		t.Fatalf("Apply = %+v", r)
	}
}

// ------------------------------------------------------ snapshot / restore

// populate gives an FSM a bit of every kind of state.
func populate(h *harness) {
	h.t.Helper()
	h.apply(
		&Command{Type: TypeInitCluster, ClusterKey: "ck"},
		&Command{Type: TypeSetNode, NodeID: "n1", RaftAddr: "a:1", HTTPAddr: "a:2"},
		&Command{Type: TypeRegister, Username: "ann", PassHash: []byte("pa"), Name: "Ann", Email: "ann@example.com"},
		&Command{Type: TypeRegister, Username: "bob", PassHash: []byte("pb")},
	)
	h.apply(
		deposit(1, 10000),
		keyed(deposit(2, 2500), "b-1"),
		withdraw(1, 1234),
		&Command{Type: TypeCreateSession, Username: "ann", TokenHash: tok("ann-s"), Expires: t0 + int64(time.Hour)},
	)
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := newHarness(t)
	populate(src)
	data := snapshotBytes(t, src.f)
	srcHash, srcIdx := hashOf(t, src.f), src.f.AppliedIndex()

	dst := newHarness(t)
	// State that is not in the snapshot, at a different index.
	dst.next = 100
	dst.apply(
		&Command{Type: TypeRegister, Username: "zed", PassHash: []byte("pz")},
		&Command{Type: TypeSetNode, NodeID: "nX", RaftAddr: "x:1", HTTPAddr: "x:2"},
		&Command{Type: TypeInitCluster, ClusterKey: "other"},
	)
	if hashOf(t, dst.f) == srcHash {
		t.Fatal("test setup: target already equals source")
	}
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := hashOf(t, dst.f); got != srcHash {
		t.Fatalf("restored hash %s != source %s", got, srcHash)
	}
	if dst.f.AppliedIndex() != srcIdx {
		t.Fatalf("restored AppliedIndex = %d, want %d", dst.f.AppliedIndex(), srcIdx)
	}
	var zedFound bool
	_ = dst.f.View(func(v *View) error { _, _, zedFound = v.AccountByUsername("zed"); return nil })
	if zedFound {
		t.Fatal("account not in the snapshot survived restore")
	}
	if _, ok := node(t, dst.f, "nX"); ok {
		t.Fatal("node not in the snapshot survived restore")
	}
	if k := clusterKey(t, dst.f); k != "ck" {
		t.Fatalf("cluster key = %q, want ck", k)
	}
	if s, ok := session(t, dst.f, tok("ann-s")); !ok || s.Account != 1 {
		t.Fatalf("session not restored: %+v %v", s, ok)
	}
	if _, err := os.Stat(dst.f.path + ".restore"); !os.IsNotExist(err) {
		t.Fatalf("temporary restore file left behind: %v", err)
	}

	// Both continue identically from the snapshot point, including
	// idempotency records carried by the snapshot.
	dst.next, dst.now = src.next, src.now
	for _, h := range []*harness{src, dst} {
		rs := h.apply(keyed(deposit(2, 2500), "b-1"), deposit(1, 1))
		if !rs[0].Replay {
			t.Fatal("idempotency record lost in snapshot")
		}
	}
	if hashOf(t, src.f) != hashOf(t, dst.f) || src.f.AppliedIndex() != dst.f.AppliedIndex() {
		t.Fatal("source and restored FSM diverged after the same entries")
	}
	// Restart replay after a restore still skips what the snapshot covers.
	before := dst.f.CommandsApplied()
	applyLogs(t, dst.f, []*raft.Log{{Index: srcIdx, Term: 1, Type: raft.LogCommand, Data: Encode(deposit(1, 999))}})
	if dst.f.CommandsApplied() != before {
		t.Fatal("entry covered by the snapshot applied again")
	}
}

func TestSnapshotIsConsistentPointInTime(t *testing.T) {
	h := newHarness(t)
	populate(h)
	atSnap, idxAtSnap := hashOf(t, h.f), h.f.AppliedIndex()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Writes after Snapshot() must not leak into the persisted image.
	h.apply(deposit(1, 777), &Command{Type: TypeRegister, Username: "late", PassHash: []byte("p")})
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release() // Release is idempotent.

	dst := mustOpen(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if hashOf(t, dst) != atSnap || dst.AppliedIndex() != idxAtSnap {
		t.Fatal("snapshot did not capture the state at Snapshot() time")
	}
}

func TestPersistCancelsSinkOnWriteError(t *testing.T) {
	h := newHarness(t)
	populate(h)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	boom := errors.New("disk full")
	sink := &memSink{failWrite: boom}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist succeeded on a failing sink")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink cancelled=%v closed=%v; want cancelled only", sink.cancelled, sink.closed)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		n := min(len(p), r.n)
		r.n -= n
		return n, nil
	}
	return 0, errors.New("connection reset")
}

func boltFileWithout(t *testing.T, bucket string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte(bucket)); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRestoreRejectsGarbageAndKeepsState(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	garbage := make([]byte, 64<<10)
	rnd.Read(garbage)
	inputs := map[string]func() io.Reader{
		"empty":                func() io.Reader { return bytes.NewReader(nil) },
		"short text":           func() io.Reader { return strings.NewReader("definitely not a bolt file") },
		"random bytes":         func() io.Reader { return bytes.NewReader(garbage) },
		"bolt file, no meta":   func() io.Reader { return bytes.NewReader(boltFileWithout(t, "unrelated")) },
		"read error mid-copy":  func() io.Reader { return &failingReader{n: 10000} },
		"zeroed 4 pages":       func() io.Reader { return bytes.NewReader(make([]byte, 16<<10)) },
		"truncated state file": nil, // filled below
	}
	for name, mk := range inputs {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			populate(h)
			if mk == nil {
				full := snapshotBytes(t, h.f)
				mk = func() io.Reader { return bytes.NewReader(full[:len(full)/3]) }
			}
			beforeHash, beforeIdx := hashOf(t, h.f), h.f.AppliedIndex()
			err := h.f.Restore(io.NopCloser(mk()))
			if err == nil {
				t.Fatal("Restore accepted bad input")
			}
			if !errors.Is(err, ErrRestore) {
				t.Fatalf("Restore error %v does not wrap ErrRestore", err)
			}
			if hashOf(t, h.f) != beforeHash || h.f.AppliedIndex() != beforeIdx {
				t.Fatal("failed restore changed state")
			}
			if _, err := os.Stat(h.f.path + ".restore"); !os.IsNotExist(err) {
				t.Fatalf("temporary restore file left behind: %v", err)
			}
			wantCode(t, h.apply1(deposit(1, 1)), CodeOK)
			if cash(t, h.f, 1) != 10000-1234+1 {
				t.Fatalf("FSM unusable after failed restore: cash %s", cash(t, h.f, 1))
			}
		})
	}
}

func TestRestoreClosesReader(t *testing.T) {
	h := newHarness(t)
	populate(h)
	data := snapshotBytes(t, h.f)
	for _, in := range [][]byte{data, []byte("junk")} {
		rc := &closeTracker{Reader: bytes.NewReader(in)}
		_ = mustOpen(t).Restore(rc)
		if !rc.closed {
			t.Fatal("Restore did not close its reader")
		}
	}
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

// ------------------------------------------------------------------- hash

// scenario is a small workload with knobs that each change one detail of
// the resulting state.
type scenario struct {
	amount   trader.Cents
	name     string
	email    string
	session  bool
	nodeAddr string
}

func (s scenario) run(t testing.TB) *FSM {
	h := newHarness(t)
	h.apply(
		&Command{Type: TypeRegister, Username: "ann", PassHash: []byte("p"), Name: s.name, Email: s.email},
		&Command{Type: TypeRegister, Username: "bob", PassHash: []byte("p")},
		&Command{Type: TypeSetNode, NodeID: "n1", RaftAddr: s.nodeAddr, HTTPAddr: "h:1"},
	)
	h.apply(deposit(1, s.amount), keyed(deposit(2, 300), "k"))
	if s.session {
		h.apply(&Command{Type: TypeCreateSession, Username: "bob", TokenHash: tok("t"), Expires: t0 + 1e12})
	} else {
		h.apply(deposit(2, 0)) // rejected, keeps indexes aligned
	}
	return h.f
}

func TestHashDetectsAnyDifference(t *testing.T) {
	base := scenario{amount: 10000, name: "Ann", email: "ann@example.com", nodeAddr: "a:1"}
	baseHash := hashOf(t, base.run(t))
	if again := hashOf(t, base.run(t)); again != baseHash {
		t.Fatalf("same logs, different hashes: %s vs %s", baseHash, again)
	}
	variants := map[string]func(s *scenario){
		"one cent":  func(s *scenario) { s.amount++ },
		"name":      func(s *scenario) { s.name = "Anne" },
		"email":     func(s *scenario) { s.email = "anne@example.com" },
		"session":   func(s *scenario) { s.session = true },
		"node addr": func(s *scenario) { s.nodeAddr = "a:2" },
	}
	for name, mutate := range variants {
		s := base
		mutate(&s)
		f := s.run(t)
		if f.AppliedIndex() == 0 {
			t.Fatal("nothing applied")
		}
		if hashOf(t, f) == baseHash {
			t.Errorf("hash did not change when %s differs", name)
		}
	}
}

func TestHashIgnoresAppliedIndexOnly(t *testing.T) {
	a, b := newHarness(t), newHarness(t)
	a.register("ann")
	b.register("ann")
	applyLogs(t, b.f, []*raft.Log{b.entry(raft.LogNoop)})
	ha, ia, _ := a.f.Hash()
	hb, ib, _ := b.f.Hash()
	if ia == ib {
		t.Fatal("test setup: indexes equal")
	}
	if ha != hb {
		t.Fatal("hash depends on the applied index, not just on the data")
	}
}

// ------------------------------------------------------------ WaitApplied

func TestWaitApplied(t *testing.T) {
	t.Run("already reached", func(t *testing.T) {
		h := newHarness(t)
		h.register("ann")
		closed := make(chan struct{})
		close(closed)
		if !h.f.WaitApplied(closed, 1) || !h.f.WaitApplied(nil, 0) {
			t.Fatal("WaitApplied false for a reached index")
		}
	})
	t.Run("returns when reached", func(t *testing.T) {
		h := newHarness(t)
		h.register("ann")
		target := h.f.AppliedIndex() + 3
		got := make(chan bool, 1)
		go func() { got <- h.f.WaitApplied(make(chan struct{}), target) }()
		for h.f.AppliedIndex() < target {
			select {
			case v := <-got:
				t.Fatalf("WaitApplied(%d) returned %v at index %d", target, v, h.f.AppliedIndex())
			default:
			}
			h.apply(deposit(1, 1))
		}
		if !waitResult(t, got, "WaitApplied") {
			t.Fatal("WaitApplied returned false after the index was reached")
		}
	})
	t.Run("done first", func(t *testing.T) {
		h := newHarness(t)
		done := make(chan struct{})
		got := make(chan bool, 1)
		go func() { got <- h.f.WaitApplied(done, 1000) }()
		h.register("ann") // progress that does not reach the target
		close(done)
		if waitResult(t, got, "WaitApplied after done") {
			t.Fatal("WaitApplied true although the index was never reached")
		}
	})
	t.Run("woken by restore", func(t *testing.T) {
		src := newHarness(t)
		populate(src)
		data := snapshotBytes(t, src.f)
		dst := mustOpen(t)
		got := make(chan bool, 1)
		go func() { got <- dst.WaitApplied(make(chan struct{}), src.f.AppliedIndex()) }()
		if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatal(err)
		}
		if !waitResult(t, got, "WaitApplied across Restore") {
			t.Fatal("WaitApplied false after restore reached the index")
		}
	})
}

// ------------------------------------------------------------ determinism

// workload is a pseudo-random but fixed mix of every command type,
// including rejections, repeated idempotency keys and reused keys.
func workload(n int) []*Command {
	rnd := rand.New(rand.NewSource(42))
	users := []string{"ann", "bob", "cy", "dee", "Ann", "x!"}
	var out, withKey []*Command
	now := t0
	for i := 0; i < n; i++ {
		now += int64(rnd.Intn(int(time.Hour)))
		if i%97 == 0 {
			now += int64(IdempotencyTTL) // let records expire now and then
		}
		if len(withKey) > 0 && rnd.Intn(8) == 0 {
			// A client retry: an earlier keyed command, stamped anew.
			c := *withKey[rnd.Intn(len(withKey))]
			c.Time = now
			out = append(out, &c)
			continue
		}
		acct := uint64(rnd.Intn(6))
		var c *Command
		switch rnd.Intn(10) {
		case 0:
			c = &Command{Type: TypeRegister, Username: users[rnd.Intn(len(users))], PassHash: []byte{byte(i)}, Email: []string{"", "a@b.io", "bad"}[rnd.Intn(3)]}
		case 1, 2, 3:
			c = deposit(acct, trader.Cents(rnd.Int63n(100000)-1000))
		case 4, 5:
			c = withdraw(acct, trader.Cents(rnd.Int63n(50000)))
		case 6:
			c = &Command{Type: TypeCreateSession, Username: users[rnd.Intn(len(users))], TokenHash: tok(fmt.Sprint(rnd.Intn(30))), Expires: now + int64(rnd.Intn(int(3*time.Hour)))}
		case 7:
			c = &Command{Type: TypeRevokeSession, Account: acct, TokenHash: tok(fmt.Sprint(rnd.Intn(30)))}
		case 8:
			c = &Command{Type: TypeProfile, Account: acct, SetName: rnd.Intn(2) == 0, Name: fmt.Sprint("n", i), SetEmail: rnd.Intn(2) == 0, Email: []string{"", "e@x.io", "bad"}[rnd.Intn(3)]}
		case 9:
			if rnd.Intn(2) == 0 {
				c = &Command{Type: TypeSetNode, NodeID: fmt.Sprint("n", rnd.Intn(4)), RaftAddr: fmt.Sprint("r:", i), HTTPAddr: fmt.Sprint("h:", i)}
			} else {
				c = &Command{Type: TypeRemoveNode, NodeID: fmt.Sprint("n", rnd.Intn(4))}
			}
		}
		if rnd.Intn(3) == 0 {
			c.Key = fmt.Sprint("key-", rnd.Intn(20))
			withKey = append(withKey, c)
		}
		c.Time = now
		out = append(out, c)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	cmds := workload(1500)
	run := func(batchSize func(i int) int) (*FSM, []*Result) {
		h := newHarness(t)
		var all []*Result
		for i := 0; i < len(cmds); {
			n := min(batchSize(i), len(cmds)-i)
			all = append(all, h.apply(cmds[i:i+n]...)...)
			i += n
		}
		return h.f, all
	}
	fa, ra := run(func(int) int { return 1 })
	fb, rb := run(func(int) int { return 64 })
	fc, rc := run(func(i int) int { return 1 + i%13 })
	ha, hb, hc := hashOf(t, fa), hashOf(t, fb), hashOf(t, fc)
	if ha != hb || ha != hc {
		t.Fatalf("same log, different states: %s %s %s", ha, hb, hc)
	}
	codes := map[string]int{}
	replays := 0
	for i := range ra {
		ea, eb, ec := EncodeResult(ra[i]), EncodeResult(rb[i]), EncodeResult(rc[i])
		if !bytes.Equal(ea, eb) || !bytes.Equal(ea, ec) {
			t.Fatalf("result %d differs between replicas:\n%+v\n%+v\n%+v", i, ra[i], rb[i], rc[i])
		}
		codes[ra[i].Code]++
		if ra[i].Replay {
			replays++
		}
	}
	// Make sure the workload really exercised success, rejection and replay.
	for _, c := range []string{CodeOK, CodeInsufficientFunds, CodeBadAmount, CodeUnknownAccount, CodeUsernameTaken, CodeIdempotencyReused, CodeUnknownSession} {
		if codes[c] == 0 {
			t.Errorf("workload produced no %q results: %v", c, codes)
		}
	}
	if replays == 0 {
		t.Error("workload produced no replays")
	}
	// Money only moves through deposits and withdrawals.
	var want trader.Cents
	for i, c := range cmds {
		if ra[i].Code != CodeOK || ra[i].Replay {
			continue
		}
		switch c.Type {
		case TypeDeposit:
			want += trader.Cents(c.Amount)
		case TypeWithdraw:
			want -= trader.Cents(c.Amount)
		}
	}
	if _, total := countAccounts(t, fa); total != want {
		t.Fatalf("total cash %s, want %s from accepted deposits and withdrawals", total, want)
	}
}

// ------------------------------------------------ concurrency and closing

func TestConcurrentReadsDuringApply(t *testing.T) {
	h := newHarness(t)
	ann := h.register("ann")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	reader := func(fn func() error) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := fn(); err != nil {
				errs <- err
				return
			}
		}
	}
	wg.Add(3)
	go reader(func() error {
		return h.f.View(func(v *View) error {
			a, ok := v.Account(ann)
			if !ok || a.Cash < 0 {
				return fmt.Errorf("bad account read %+v %v", a, ok)
			}
			return nil
		})
	})
	go reader(func() error { _, _, err := h.f.Hash(); return err })
	go reader(func() error {
		snap, err := h.f.Snapshot()
		if err != nil {
			return err
		}
		defer snap.Release()
		return snap.Persist(&memSink{})
	})
	for i := 0; i < 50; i++ {
		h.apply(deposit(ann, 1), deposit(ann, 1), withdraw(ann, 1))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if cash(t, h.f, ann) != 50 {
		t.Fatalf("cash = %s, want 0.50", cash(t, h.f, ann))
	}
}

func TestClosedFSM(t *testing.T) {
	f, err := Open(filepath.Join(t.TempDir(), "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := f.View(func(*View) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("View after Close = %v", err)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot after Close = %v", err)
	}
	if _, _, err := f.Hash(); !errors.Is(err, ErrClosed) {
		t.Errorf("Hash after Close = %v", err)
	}
	msg := expectPanic(t, "ApplyBatch after Close", func() {
		f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogNoop}})
	})
	if !strings.Contains(msg, ErrClosed.Error()) {
		t.Errorf("panic %q does not mention %v", msg, ErrClosed)
	}
}

func TestOpenTwiceTimesOut(t *testing.T) {
	// bbolt holds an exclusive file lock: a second node process on the same
	// data dir must fail instead of corrupting it.
	path := filepath.Join(t.TempDir(), "state.db")
	mustOpenPath(t, path)
	if f2, err := Open(path, nil); err == nil {
		f2.Close()
		t.Fatal("second Open of a locked state file succeeded")
	}
}

// -------------------------------------------------------------- benchmark

func BenchmarkApplyBatch(b *testing.B) {
	const batch = 64
	f := mustOpen(b)
	h := &harness{t: b, f: f, next: 1, term: 1, now: t0}
	h.register("ann")
	data := Encode(&Command{Type: TypeDeposit, Time: t0, Account: 1, Amount: 1})
	logs := make([]*raft.Log, batch)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
	}
	next := h.next
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, l := range logs {
			l.Index = next
			next++
		}
		f.ApplyBatch(logs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/cmd")
	if got := cash(b, f, 1); got != trader.Cents(b.N*batch) {
		b.Fatalf("cash = %s, want %d cents", got, b.N*batch)
	}
}

// Raft can wait for a Restore while a snapshot it took earlier still holds
// a read transaction: hashicorp/raft's takeSnapshot keeps the FSM snapshot
// while it asks the main loop for the configuration, and the main loop is
// busy installing the snapshot that called Restore. Restore must not wait
// for that reader (it did, and a chaos round wedged a follower for good);
// the held snapshot still persists the state it was taken of.
func TestRestoreDoesNotWaitForHeldSnapshot(t *testing.T) {
	h := newHarness(t)
	populate(h)
	before := hashOf(t, h.f)
	other := newHarness(t)
	populate(other)
	other.apply(deposit(1, 4242))
	image, want := snapshotBytes(t, other.f), hashOf(t, other.f)

	held, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.f.Flush(); err != nil { // the snapshot now holds its read transaction
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.f.Restore(io.NopCloser(bytes.NewReader(image))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		held.Release() // lets Restore finish, so the test can end
		t.Fatal("Restore waited for a snapshot's read transaction")
	}
	if hashOf(t, h.f) != want {
		t.Fatal("restored state differs from the image")
	}
	sink := &memSink{}
	if err := held.Persist(sink); err != nil {
		t.Fatalf("persisting the snapshot held across the restore: %v", err)
	}
	held.Release()
	dst := mustOpen(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if hashOf(t, dst) != before {
		t.Fatal("the held snapshot did not keep the state it was taken of")
	}
	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
}

// StepSync syncs after every Step bytes written, counting across writes
// of any size, and reports a failed sync as the write's error.
func TestStepSync(t *testing.T) {
	var buf bytes.Buffer
	syncs := 0
	fail := false
	s := &StepSync{W: &buf, Step: 10, Sync: func() error {
		syncs++
		if fail {
			return errors.New("disk gone")
		}
		return nil
	}}
	// 12 bytes: a sync; a 25-byte write: one more (the count restarts at
	// each sync); 1 byte: none.
	for _, n := range []int{3, 3, 3, 3, 25, 1} {
		if _, err := s.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if syncs != 2 || buf.Len() != 38 {
		t.Fatalf("%d syncs for %d bytes in steps of 10, want 2 for 38", syncs, buf.Len())
	}
	fail = true
	if _, err := s.Write(make([]byte, 10)); err == nil {
		t.Fatal("a failed sync was not reported")
	}
}
