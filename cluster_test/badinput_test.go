package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// rawHTTP sends exactly one request: no retries, no failover, no leader
// hints, so each assertion is about the node the request was sent to.
var rawHTTP = &http.Client{Timeout: 20 * time.Second}

// rawReq is one hand-built HTTP request.
type rawReq struct {
	method string
	path   string // with query string
	token  string // sent as "Authorization: Bearer TOKEN" when non-empty
	body   []byte // nil sends no body
	header map[string]string
}

// rawResp is what a node answered.
type rawResp struct {
	status int
	header http.Header
	body   []byte
}

func (r rawResp) String() string { return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body)) }

// send sends rq to the node at addr and fails the test if no answer comes.
func send(t testing.TB, addr string, rq rawReq) rawResp {
	t.Helper()
	r, err := rawDo(addr, rq)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// rawDo sends rq to the node at addr once; safe to call from goroutines.
func rawDo(addr string, rq rawReq) (rawResp, error) {
	var rd io.Reader
	if rq.body != nil {
		rd = bytes.NewReader(rq.body)
	}
	req, err := http.NewRequestWithContext(context.Background(), rq.method, "http://"+addr+rq.path, rd)
	if err != nil {
		return rawResp{}, err
	}
	if rq.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if rq.token != "" {
		req.Header.Set("Authorization", "Bearer "+rq.token)
	}
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	resp, err := rawHTTP.Do(req)
	if err != nil {
		return rawResp{}, fmt.Errorf("%s %s to %s: %w", rq.method, rq.path, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return rawResp{}, fmt.Errorf("%s %s to %s: read body: %w", rq.method, rq.path, addr, err)
	}
	return rawResp{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// apiError checks that r is an error response with the given status and
// stable code, and a JSON body of exactly {"error":{"code","message"}}
// (plus the optional leader hint) whose message contains every part
// (case-insensitively). It returns the message.
func apiError(t testing.TB, r rawResp, status int, code string, parts ...string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json: %s", ct, r)
	}
	var eb struct {
		Error *struct {
			Code    *string `json:"code"`
			Message *string `json:"message"`
			Leader  string  `json:"leader"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == nil || eb.Error.Code == nil || eb.Error.Message == nil {
		t.Fatalf("error body is not {\"error\":{\"code\",\"message\"}} (%v): %s", err, r)
	}
	if *eb.Error.Code != code {
		t.Fatalf("code %q, want %q: %s", *eb.Error.Code, code, r)
	}
	msg := *eb.Error.Message
	if strings.TrimSpace(msg) == "" {
		t.Fatalf("empty error message: %s", r)
	}
	for _, p := range parts {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(p)) {
			t.Fatalf("message %q does not mention %q", msg, p)
		}
	}
	return msg
}

// okAccount checks a 200 account answer and returns it.
func okAccount(t testing.TB, r rawResp) transport.Account {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r)
	}
	var a transport.Account
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("account body: %v: %s", err, r)
	}
	return a
}

// stateSnap is every live node's state hash and the watched accounts as
// each node holds them.
type stateSnap struct {
	hashes   map[string]string
	accounts map[string]string
	term     uint64
	last     uint64 // leader's last log index
}

// snapshotState waits until every live node holds the same state, then
// records it.
func snapshotState(t testing.TB, c *Cluster, ids ...uint64) stateSnap {
	t.Helper()
	c.EnsureSame()
	s := stateSnap{hashes: map[string]string{}, accounts: map[string]string{}}
	for _, tn := range c.Live() {
		h, _, err := tn.Node.FSM().Hash()
		if err != nil {
			t.Fatal(err)
		}
		s.hashes[tn.ID] = h
		err = tn.Node.FSM().View(func(v *fsm.View) error {
			for _, id := range ids {
				a, ok := v.Account(id)
				if !ok {
					return fmt.Errorf("account %d missing", id)
				}
				s.accounts[fmt.Sprintf("%s/%d", tn.ID, id)] = fmt.Sprintf("%+v", *a)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tn.ID, err)
		}
		if tn.Node.IsLeader() {
			s.term, s.last = tn.Node.Raft().CurrentTerm(), tn.Node.Raft().LastIndex()
		}
	}
	return s
}

// mustUnchanged fails unless the state now equals before. With logged
// false it also checks that nothing was appended to the Raft log (unless an
// election in between appended its own entries).
func mustUnchanged(t testing.TB, c *Cluster, before stateSnap, logged bool, ids ...uint64) {
	t.Helper()
	after := snapshotState(t, c, ids...)
	for id, h := range before.hashes {
		if after.hashes[id] != h {
			t.Fatalf("state of %s changed: hash %s -> %s", id, h, after.hashes[id])
		}
	}
	for k, a := range before.accounts {
		if after.accounts[k] != a {
			t.Fatalf("account %s changed: %s -> %s", k, a, after.accounts[k])
		}
	}
	if !logged && before.term == after.term && before.term != 0 && after.last != before.last {
		t.Fatalf("bad input reached the log: leader's last index %d -> %d", before.last, after.last)
	}
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// badCase is one rejected request.
type badCase struct {
	name   string
	req    rawReq
	status int
	code   string
	parts  []string // the message must mention each
	logged bool     // a business rejection decided by Apply: it enters the log as a no-op
}

func Test_BadInput_RejectedWithoutChange(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	leader := c.Leader()
	follower := c.Followers()[0]

	acl := c.Client()
	alice := Trader(t, acl, "alice")
	if _, err := acl.Deposit(ctx, "100.00", ""); err != nil {
		t.Fatal(err)
	}
	bcl := c.Client()
	bob := Trader(t, bcl, "bob")
	aliceTok, bobTok := acl.Token(), bcl.Token()
	key := leader.Node.ClusterKey()
	if key == "" {
		t.Fatal("no cluster key")
	}

	deposit := func(amount string) rawReq {
		return rawReq{method: "POST", path: "/v1/account/deposit", token: aliceTok, body: jsonBody(map[string]string{"amount": amount})}
	}
	withdraw := func(tok, amount string) rawReq {
		return rawReq{method: "POST", path: "/v1/account/withdraw", token: tok, body: jsonBody(map[string]string{"amount": amount})}
	}
	post := func(path, tok, body string) rawReq {
		return rawReq{method: "POST", path: path, token: tok, body: []byte(body)}
	}
	get := func(path, tok string) rawReq { return rawReq{method: "GET", path: path, token: tok} }
	// internal forwards one command the way followers do: as a batch.
	internal := func(k string, cmd []byte) rawReq {
		r := rawReq{method: "POST", path: transport.PathInternalApplyMany, body: fsm.EncodeBatch([][]byte{cmd}), header: map[string]string{"Content-Type": "application/octet-stream"}}
		if k != "" {
			r.header[transport.HeaderClusterKey] = k
		}
		return r
	}
	// A well-formed forwarded command that would move money if accepted.
	bigDeposit := fsm.Encode(&fsm.Command{Type: fsm.TypeDeposit, Account: alice.AccountID, Amount: 1_000_000})
	oversized := []byte(`{"amount":"1.00","idempotency_key":"` + strings.Repeat("k", transport.MaxJSONBody+10) + `"}`)
	unknownTok := strings.Repeat("00", node.TokenBytes)

	const (
		bad       = http.StatusBadRequest
		unauth    = http.StatusUnauthorized
		forbidden = http.StatusForbidden
	)
	cases := []badCase{
		// Amounts: malformed decimals and out-of-range values.
		{"deposit/negative", deposit("-5"), bad, transport.CodeBadRequest, []string{"amount", "positive"}, false},
		{"deposit/zero", deposit("0"), bad, transport.CodeBadRequest, []string{"amount", "positive"}, false},
		{"deposit/zero-cents", deposit("0.00"), bad, transport.CodeBadRequest, []string{"amount", "positive"}, false},
		{"deposit/three-places", deposit("1.234"), bad, transport.CodeBadRequest, []string{"amount", "2 decimal places"}, false},
		{"deposit/exponent", deposit("1e3"), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/empty", deposit(""), bad, transport.CodeBadRequest, []string{"amount", "empty"}, false},
		{"deposit/leading-space", deposit(" 1"), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/letters", deposit("abc"), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/plus-sign", deposit("+5"), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/thousands-sep", deposit("1,000.00"), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/trailing-dot", deposit("5."), bad, transport.CodeBadRequest, []string{"amount", "not a decimal"}, false},
		{"deposit/over-max", deposit("10000000000.01"), bad, transport.CodeBadRequest, []string{"amount", "exceeds the maximum"}, false},
		{"deposit/huge", deposit("99999999999999999999"), bad, transport.CodeBadRequest, []string{"amount", "too large"}, false},
		{"withdraw/negative", withdraw(aliceTok, "-5"), bad, transport.CodeBadRequest, []string{"amount", "positive"}, false},
		{"withdraw/three-places", withdraw(aliceTok, "0.001"), bad, transport.CodeBadRequest, []string{"amount", "2 decimal places"}, false},
		// Business rejections: decided by Apply, so they are logged, but
		// change nothing.
		{"withdraw/insufficient", withdraw(aliceTok, "100.01"), 422, fsm.CodeInsufficientFunds, []string{"insufficient funds", "100.01", "100.00"}, true},
		{"withdraw/insufficient-empty-account", withdraw(bobTok, "0.01"), 422, fsm.CodeInsufficientFunds, []string{"insufficient funds", "0.00 available"}, true},
		// Bodies.
		{"json/truncated", post("/v1/account/deposit", aliceTok, `{"amount":`), bad, transport.CodeBadJSON, []string{"malformed JSON"}, false},
		{"json/unquoted-key", post("/v1/account/deposit", aliceTok, `{amount:"1.00"}`), bad, transport.CodeBadJSON, []string{"malformed JSON", "invalid character"}, false},
		{"json/not-json", post("/v1/account/deposit", aliceTok, `deposit 5`), bad, transport.CodeBadJSON, []string{"malformed JSON"}, false},
		{"json/trailing-data", post("/v1/account/deposit", aliceTok, `{"amount":"1.00"} {"amount":"2.00"}`), bad, transport.CodeBadJSON, []string{"trailing data"}, false},
		{"json/unknown-field", post("/v1/account/deposit", aliceTok, `{"amount":"1.00","amout":"2.00"}`), bad, transport.CodeBadJSON, []string{`unknown field "amout"`}, false},
		{"json/amount-number", post("/v1/account/deposit", aliceTok, `{"amount":5}`), bad, transport.CodeBadJSON, []string{`"amount"`, "string"}, false},
		{"json/key-number", post("/v1/account/deposit", aliceTok, `{"amount":"1.00","idempotency_key":7}`), bad, transport.CodeBadJSON, []string{`"idempotency_key"`, "string"}, false},
		{"json/array", post("/v1/account/deposit", aliceTok, `["1.00"]`), bad, transport.CodeBadJSON, []string{"JSON object", "array"}, false},
		{"json/empty-body", post("/v1/account/deposit", aliceTok, ``), bad, transport.CodeBadJSON, []string{"empty"}, false},
		{"json/null", post("/v1/account/deposit", aliceTok, `null`), bad, transport.CodeBadRequest, []string{"amount", "empty"}, false},
		{"json/oversized", rawReq{method: "POST", path: "/v1/account/deposit", token: aliceTok, body: oversized}, http.StatusRequestEntityTooLarge, transport.CodeBodyTooLarge, []string{"exceeds", strconv.Itoa(transport.MaxJSONBody)}, false},
		{"json/long-idempotency-key", post("/v1/account/deposit", aliceTok, `{"amount":"1.00","idempotency_key":"`+strings.Repeat("k", 129)+`"}`), bad, transport.CodeBadRequest, []string{"idempotency_key", "128"}, false},
		// Authentication and ownership.
		{"auth/missing-token", get("/v1/account", ""), unauth, transport.CodeUnauthenticated, []string{"missing bearer token"}, false},
		{"auth/missing-token-write", deposit("1.00").withToken(""), unauth, transport.CodeUnauthenticated, []string{"missing bearer token"}, false},
		{"auth/basic-scheme", rawReq{method: "GET", path: "/v1/account", header: map[string]string{"Authorization": "Basic YWxpY2U6cHc="}}, unauth, transport.CodeUnauthenticated, []string{"missing bearer token"}, false},
		{"auth/garbage-token", get("/v1/account", "garbage"), unauth, transport.CodeUnauthenticated, []string{"malformed session token"}, false},
		{"auth/garbage-token-write", deposit("1.00").withToken("garbage"), unauth, transport.CodeUnauthenticated, []string{"malformed session token"}, false},
		{"auth/unknown-token", get("/v1/account", unknownTok), unauth, transport.CodeUnauthenticated, []string{"unknown or revoked"}, false},
		{"auth/unknown-token-write", deposit("1.00").withToken(unknownTok), unauth, transport.CodeUnauthenticated, []string{"unknown or revoked"}, false},
		{"auth/other-account", get(fmt.Sprintf("/v1/accounts/%d", bob.AccountID), aliceTok), forbidden, transport.CodeForbidden, []string{strconv.FormatUint(bob.AccountID, 10), "another trader"}, false},
		{"auth/other-account-no-token", get(fmt.Sprintf("/v1/accounts/%d", bob.AccountID), ""), unauth, transport.CodeUnauthenticated, []string{"missing bearer token"}, false},
		{"auth/account-id-not-number", get("/v1/accounts/abc", aliceTok), bad, transport.CodeBadRequest, []string{"account id", "not a number"}, false},
		// Login: a wrong password and an unknown user read the same.
		{"login/wrong-password", post("/v1/sessions", "", `{"username":"alice","password":"not-her-password"}`), unauth, transport.CodeUnauthenticated, []string{"wrong username or password"}, false},
		{"login/unknown-user", post("/v1/sessions", "", `{"username":"mallory","password":"password-mallory"}`), unauth, transport.CodeUnauthenticated, []string{"wrong username or password"}, false},
		{"login/empty-body", post("/v1/sessions", "", ``), bad, transport.CodeBadJSON, []string{"empty"}, false},
		// Registration.
		{"register/short-password", post("/v1/users", "", `{"username":"carol","password":"short"}`), bad, transport.CodeBadRequest, []string{"password", "at least 8"}, false},
		{"register/long-password", post("/v1/users", "", `{"username":"carol","password":"`+strings.Repeat("p", 73)+`"}`), bad, transport.CodeBadRequest, []string{"password", "at most 72"}, false},
		{"register/username-space", post("/v1/users", "", `{"username":"car ol","password":"password-carol"}`), bad, transport.CodeBadRequest, []string{"username", "letters, digits"}, false},
		{"register/username-short", post("/v1/users", "", `{"username":"ca","password":"password-carol"}`), bad, transport.CodeBadRequest, []string{"username", "3 to 32"}, false},
		{"register/username-unicode", post("/v1/users", "", `{"username":"cárol","password":"password-carol"}`), bad, transport.CodeBadRequest, []string{"username"}, false},
		{"register/username-missing", post("/v1/users", "", `{"password":"password-carol"}`), bad, transport.CodeBadRequest, []string{"username"}, false},
		{"register/bad-email", post("/v1/users", "", `{"username":"carol","password":"password-carol","email":"not-an-email"}`), bad, transport.CodeBadRequest, []string{"email", "not-an-email"}, false},
		{"register/email-with-name", post("/v1/users", "", `{"username":"carol","password":"password-carol","email":"Carol <c@example.com>"}`), bad, transport.CodeBadRequest, []string{"email"}, false},
		{"register/name-control-char", post("/v1/users", "", `{"username":"carol","password":"password-carol","name":"Ca\u0007rol"}`), bad, transport.CodeBadRequest, []string{"name", "control"}, false},
		{"register/unknown-field", post("/v1/users", "", `{"username":"carol","password":"password-carol","admin":true}`), bad, transport.CodeBadJSON, []string{`unknown field "admin"`}, false},
		{"register/duplicate", post("/v1/users", "", `{"username":"alice","password":"password-other"}`), http.StatusConflict, fsm.CodeUsernameTaken, []string{"alice", "taken"}, true},
		// Profile.
		{"profile/bad-email", post("/v1/account/profile", aliceTok, `{"email":"alice@"}`), bad, transport.CodeBadRequest, []string{"email", "alice@"}, false},
		{"profile/name-too-long", post("/v1/account/profile", aliceTok, `{"name":"`+strings.Repeat("n", 129)+`"}`), bad, transport.CodeBadRequest, []string{"name", "128"}, false},
		{"profile/nothing", post("/v1/account/profile", aliceTok, `{}`), bad, transport.CodeBadRequest, []string{"name", "email"}, false},
		{"profile/name-number", post("/v1/account/profile", aliceTok, `{"name":42}`), bad, transport.CodeBadJSON, []string{`"name"`, "string"}, false},
		// Read consistency.
		{"consistency/unknown", get("/v1/account?consistency=strong", aliceTok), bad, transport.CodeBadRequest, []string{"consistency", "stale, leader or linearizable", "strong"}, false},
		{"consistency/case", get("/v1/account?consistency=STALE", aliceTok), bad, transport.CodeBadRequest, []string{"consistency", "STALE"}, false},
		{"status/fresh-not-bool", get("/v1/status?fresh=yes-please", ""), bad, transport.CodeBadRequest, []string{"fresh", "true or false", "yes-please"}, false},
		{"consistency/by-id", get(fmt.Sprintf("/v1/accounts/%d?consistency=eventual", alice.AccountID), aliceTok), bad, transport.CodeBadRequest, []string{"consistency", "eventual"}, false},
		// Unknown endpoints.
		{"route/unknown", get("/v1/nope", aliceTok), http.StatusNotFound, transport.CodeNotFound, []string{"no such endpoint", "/v1/nope"}, false},
		{"route/root", get("/", ""), http.StatusNotFound, transport.CodeNotFound, []string{"no such endpoint"}, false},
		{"route/wrong-method", get("/v1/account/deposit", aliceTok), http.StatusNotFound, transport.CodeNotFound, []string{"GET /v1/account/deposit"}, false},
		// The internal apply endpoint: a valid forwarded command without
		// the cluster key is refused; garbage with the key is rejected.
		{"internal/no-key", internal("", bigDeposit), forbidden, transport.CodeForbidden, []string{"cluster key"}, false},
		{"internal/wrong-key", internal("not-the-key", bigDeposit), forbidden, transport.CodeForbidden, []string{"cluster key"}, false},
		{"internal/key-prefix", internal(key[:len(key)-1], bigDeposit), forbidden, transport.CodeForbidden, []string{"cluster key"}, false},
		{"internal/readindex-no-key", get(transport.PathInternalReadIndex, ""), forbidden, transport.CodeForbidden, []string{"cluster key"}, false},
		{"internal/garbage", internal(key, []byte("\xff\xfe garbage \x00\x01")), bad, transport.CodeBadRequest, nil, false},
		{"internal/not-a-batch", func() rawReq { r := internal(key, nil); r.body = bigDeposit; return r }(), bad, transport.CodeBadRequest, []string{"not a batch"}, false},
		{"internal/empty", internal(key, []byte{}), bad, transport.CodeBadRequest, []string{"empty"}, false},
		{"internal/json", internal(key, []byte(`{"type":"deposit","amount":1000000}`)), bad, transport.CodeBadRequest, nil, false},
		{"internal/truncated", internal(key, bigDeposit[:len(bigDeposit)-1]), bad, transport.CodeBadRequest, nil, false},
		{"internal/trailing-bytes", internal(key, append(append([]byte(nil), bigDeposit...), 0, 0, 0)), bad, transport.CodeBadRequest, nil, false},
		{"internal/unknown-type", internal(key, append([]byte{0xee}, bigDeposit[1:]...)), bad, transport.CodeBadRequest, []string{"unknown command type"}, false},
	}

	ids := []uint64{alice.AccountID, bob.AccountID}
	for _, tc := range cases {
		for _, target := range []*TNode{follower, leader} {
			role := "follower"
			if target == leader {
				role = "leader"
			}
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				before := snapshotState(t, c, ids...)
				r := send(t, target.HTTPAddr, tc.req)
				apiError(t, r, tc.status, tc.code, tc.parts...)
				mustUnchanged(t, c, before, tc.logged, ids...)
				// The node keeps serving.
				if r := send(t, target.HTTPAddr, rawReq{method: "GET", path: "/livez"}); r.status != http.StatusOK {
					t.Fatalf("livez after bad input: %s", r)
				}
			})
		}
	}

	t.Run("login/same-message", func(t *testing.T) {
		wrong := apiError(t, send(t, follower.HTTPAddr, post("/v1/sessions", "", `{"username":"alice","password":"not-her-password"}`)), unauth, transport.CodeUnauthenticated)
		unknown := apiError(t, send(t, follower.HTTPAddr, post("/v1/sessions", "", `{"username":"mallory","password":"not-her-password"}`)), unauth, transport.CodeUnauthenticated)
		if wrong != unknown {
			t.Fatalf("wrong password says %q, unknown user says %q: they must not differ", wrong, unknown)
		}
	})

	t.Run("own-account-works", func(t *testing.T) {
		for _, target := range c.Live() {
			for _, path := range []string{"/v1/account", fmt.Sprintf("/v1/accounts/%d", alice.AccountID)} {
				a := okAccount(t, send(t, target.HTTPAddr, get(path, aliceTok)))
				if a.AccountID != alice.AccountID || a.Username != "alice" || a.Cash != "100.00" {
					t.Fatalf("%s via %s: %+v", path, target.ID, a)
				}
			}
			b := okAccount(t, send(t, target.HTTPAddr, get(fmt.Sprintf("/v1/accounts/%d", bob.AccountID), bobTok)))
			if b.AccountID != bob.AccountID || b.Cash != "0.00" {
				t.Fatalf("bob via %s: %+v", target.ID, b)
			}
		}
	})

	t.Run("revoked-token", func(t *testing.T) {
		// A second session for alice, then logged out.
		r := send(t, follower.HTTPAddr, post("/v1/sessions", "", `{"username":"alice","password":"password-alice"}`))
		if r.status != http.StatusOK {
			t.Fatalf("login: %s", r)
		}
		var lr transport.LoginResponse
		if err := json.Unmarshal(r.body, &lr); err != nil || lr.Token == "" {
			t.Fatalf("login body: %v: %s", err, r)
		}
		if r := send(t, follower.HTTPAddr, rawReq{method: "DELETE", path: "/v1/sessions/current", token: lr.Token}); r.status != http.StatusNoContent {
			t.Fatalf("logout: %s", r)
		}
		before := snapshotState(t, c, ids...)
		for _, target := range c.Live() {
			for _, rq := range []rawReq{
				get("/v1/account", lr.Token),
				get("/v1/whoami", lr.Token),
				deposit("1.00").withToken(lr.Token),
				{method: "DELETE", path: "/v1/sessions/current", token: lr.Token},
			} {
				apiError(t, send(t, target.HTTPAddr, rq), unauth, transport.CodeUnauthenticated, "unknown or revoked")
			}
		}
		mustUnchanged(t, c, before, false, ids...)
		// Alice's first session is untouched by the logout of the second.
		okAccount(t, send(t, leader.HTTPAddr, get("/v1/account", aliceTok)))
	})

	// Every node still takes real writes after all that, and agrees.
	for _, tn := range c.Live() {
		r := send(t, tn.HTTPAddr, deposit("1.00"))
		if r.status != http.StatusOK {
			t.Fatalf("deposit via %s after bad input: %s", tn.ID, r)
		}
	}
	a := okAccount(t, send(t, follower.HTTPAddr, get("/v1/account", aliceTok)))
	if a.Cash != "103.00" {
		t.Fatalf("cash %s, want 103.00", a.Cash)
	}
	c.EnsureSame()
}

func (r rawReq) withToken(tok string) rawReq {
	r.token = tok
	return r
}

func Test_BadInput_ExpiredToken(t *testing.T) {
	c := NewCluster(t, 3, func(cfg *node.Config) { cfg.SessionTTL = 300 * time.Millisecond })
	cl := c.Client()
	acct := Trader(t, cl, "erin")
	tok := cl.Token()
	for _, tn := range c.Live() {
		Poll(t, 5*time.Second, "token expired on "+tn.ID, func() error {
			r := send(t, tn.HTTPAddr, rawReq{method: "GET", path: "/v1/account", token: tok})
			if r.status != http.StatusUnauthorized || !strings.Contains(string(r.body), "expired") {
				return fmt.Errorf("still %s", r)
			}
			return nil
		})
	}
	before := snapshotState(t, c, acct.AccountID)
	for _, tn := range c.Live() {
		apiError(t, send(t, tn.HTTPAddr, rawReq{method: "GET", path: "/v1/account", token: tok}), http.StatusUnauthorized, transport.CodeUnauthenticated, "session expired", "log in again")
		apiError(t, send(t, tn.HTTPAddr, rawReq{method: "POST", path: "/v1/account/deposit", token: tok, body: []byte(`{"amount":"5.00"}`)}), http.StatusUnauthorized, transport.CodeUnauthenticated, "session expired")
		apiError(t, send(t, tn.HTTPAddr, rawReq{method: "GET", path: fmt.Sprintf("/v1/accounts/%d", acct.AccountID), token: tok}), http.StatusUnauthorized, transport.CodeUnauthenticated, "session expired")
	}
	mustUnchanged(t, c, before, false, acct.AccountID)
}
