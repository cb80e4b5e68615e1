package transport

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clDeadAddr returns a 127.0.0.1 address nothing listens on.
func clDeadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func clWriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func clWriteErr(w http.ResponseWriter, status int, code, msg, leader string) {
	clWriteJSON(w, status, ErrorBody{Error: APIError{Code: code, Message: msg, Leader: leader}})
}

// clRecorder counts requests and keeps the idempotency keys it saw.
type clRecorder struct {
	mu    sync.Mutex
	n     int
	keys  []string
	auths []string
}

func (r *clRecorder) record(req *http.Request) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.auths = append(r.auths, req.Header.Get("Authorization"))
	if req.Body != nil {
		var body struct {
			IdempotencyKey string `json:"idempotency_key"`
		}
		if json.NewDecoder(req.Body).Decode(&body) == nil && body.IdempotencyKey != "" {
			r.keys = append(r.keys, body.IdempotencyKey)
		}
	}
	return r.n
}

func (r *clRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func clMustNewClient(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Deadline == 0 {
		cfg.Deadline = 5 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func Test_Client_FailsOverFromDeadNode(t *testing.T) {
	var rec clRecorder
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		clWriteJSON(w, http.StatusOK, NodeStatus{ID: "n2", State: "Leader"})
	}))
	defer live.Close()

	dead := clDeadAddr(t)
	c := clMustNewClient(t, ClientConfig{Nodes: []string{dead, live.URL}})
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.ID != "n2" {
		t.Fatalf("status from %q, want n2", st.ID)
	}
	if got := c.Preferred(); got != live.URL {
		t.Fatalf("preferred = %q, want the live node %q", got, live.URL)
	}
	// The next call starts at the live node: one more request, no failover.
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.count() != 2 {
		t.Fatalf("live node saw %d requests, want 2", rec.count())
	}
}

func Test_Client_AllNodesDead_NamesAddresses(t *testing.T) {
	a, b := clDeadAddr(t), clDeadAddr(t)
	c := clMustNewClient(t, ClientConfig{Nodes: []string{a, b}, Deadline: 300 * time.Millisecond})
	err := c.Join(context.Background(), JoinRequest{ID: "n3", RaftAddr: "x:1", HTTPAddr: "x:2"})
	if !errors.Is(err, ErrNoNodes) {
		t.Fatalf("err = %v, want ErrNoNodes", err)
	}
	for _, addr := range []string{a, b} {
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error %q does not name %s", err, addr)
		}
	}
}

func Test_Client_SameKeyAfterOutcomeUnknown(t *testing.T) {
	var rec clRecorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.record(r) == 1 {
			clWriteErr(w, http.StatusServiceUnavailable, CodeOutcomeUnknown, "leadership lost", "")
			return
		}
		clWriteJSON(w, http.StatusOK, Account{Username: "ann", Cash: "10.00", Replayed: true})
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Token: "tok"})
	acct, err := c.Deposit(context.Background(), "10.00", "")
	if err != nil {
		t.Fatalf("Deposit: %v", err)
	}
	if acct.Cash != "10.00" {
		t.Fatalf("cash = %q", acct.Cash)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.keys) != 2 || rec.keys[0] != rec.keys[1] {
		t.Fatalf("server saw keys %q, want the same key twice", rec.keys)
	}
	if len(rec.keys[0]) != 32 {
		t.Fatalf("generated key %q is not 128-bit hex", rec.keys[0])
	}
	for _, a := range rec.auths {
		if a != "Bearer tok" {
			t.Fatalf("Authorization = %q, want %q", a, "Bearer tok")
		}
	}
}

func Test_Client_SameKeyAfterDroppedConnection(t *testing.T) {
	var rec clRecorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec.record(r) == 1 {
			// The request arrived; the answer never leaves.
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		clWriteJSON(w, http.StatusOK, Account{Username: "ann", Cash: "5.00"})
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	if _, err := c.Withdraw(context.Background(), "5.00", "my-key"); err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.keys) != 2 || rec.keys[0] != "my-key" || rec.keys[1] != "my-key" {
		t.Fatalf("server saw keys %q, want my-key twice", rec.keys)
	}
}

func Test_Client_OutcomeUnknownAtDeadline_CarriesKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clWriteErr(w, http.StatusServiceUnavailable, CodeOutcomeUnknown, "leadership lost", "")
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Deadline: 300 * time.Millisecond})
	start := time.Now()
	_, err := c.Deposit(context.Background(), "1.00", "k-1")
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want ErrOutcomeUnknown", err)
	}
	var oe *OutcomeUnknownError
	if !errors.As(err, &oe) || oe.Key != "k-1" {
		t.Fatalf("err = %#v, want *OutcomeUnknownError with key k-1", err)
	}
	if !strings.Contains(err.Error(), "k-1") {
		t.Fatalf("message %q does not show the key", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v, deadline was 300ms", d)
	}
}

func Test_Client_DeadlineRespected(t *testing.T) {
	var rec clRecorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		clWriteErr(w, http.StatusServiceUnavailable, CodeNoLeader, "no leader", "")
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Deadline: 400 * time.Millisecond})
	start := time.Now()
	_, err := c.Account(context.Background(), Linearizable)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("err = %v, want ErrNoLeader", err)
	}
	if elapsed > 2*time.Second {
		t.Fatalf("took %v, deadline was 400ms", elapsed)
	}
	if n := rec.count(); n < 2 || n > 20 {
		t.Fatalf("%d attempts in 400ms; want a few, with backoff", n)
	}
}

func Test_Client_CallerContextBoundsCall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clWriteErr(w, http.StatusServiceUnavailable, CodeUnavailable, "starting", "")
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Deadline: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ClusterStatus(ctx)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v, caller allowed 200ms", d)
	}
}

func Test_Client_APIErrorsMapAndAreNotRetried(t *testing.T) {
	cases := []struct {
		status int
		code   string
		want   error
	}{
		{http.StatusUnprocessableEntity, "insufficient_funds", nil},
		{http.StatusUnauthorized, CodeUnauthenticated, ErrUnauthenticated},
		{http.StatusForbidden, CodeForbidden, ErrForbidden},
		{http.StatusNotFound, CodeNotFound, ErrNotFound},
		{http.StatusBadRequest, CodeBadJSON, ErrBadRequest},
		{http.StatusRequestEntityTooLarge, CodeBodyTooLarge, ErrBadRequest},
		{http.StatusConflict, CodeNodeIDInUse, ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			var rec clRecorder
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rec.record(r)
				clWriteErr(w, tc.status, tc.code, "msg "+tc.code, "")
			})
			a, b := httptest.NewServer(h), httptest.NewServer(h)
			defer a.Close()
			defer b.Close()

			c := clMustNewClient(t, ClientConfig{Nodes: []string{a.URL, b.URL}})
			_, err := c.Withdraw(context.Background(), "1.00", "")
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v (%T), want *APIError", err, err)
			}
			if ae.Status != tc.status || ae.Code != tc.code || ae.Message != "msg "+tc.code {
				t.Fatalf("got %+v", ae)
			}
			if ErrorCode(err) != tc.code {
				t.Fatalf("ErrorCode = %q", ErrorCode(err))
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.want)
			}
			if rec.count() != 1 {
				t.Fatalf("%d requests, want 1 (4xx is not retried)", rec.count())
			}
		})
	}
}

func Test_Client_NonJSONErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	_, err := c.WhoAmI(context.Background())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("err = %#v", err)
	}
}

func Test_Client_FollowsLeaderHint(t *testing.T) {
	var leaderRec clRecorder
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaderRec.record(r)
		clWriteJSON(w, http.StatusCreated, Account{Username: "bob"})
	}))
	defer leader.Close()
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clWriteErr(w, http.StatusServiceUnavailable, CodeUnavailable, "cannot forward", strings.TrimPrefix(leader.URL, "http://"))
	}))
	defer follower.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{follower.URL}})
	acct, err := c.Register(context.Background(), RegisterRequest{Username: "bob", Password: "password1"})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if acct.Username != "bob" || leaderRec.count() != 1 {
		t.Fatalf("acct %+v, leader saw %d requests", acct, leaderRec.count())
	}
	if c.Preferred() != leader.URL {
		t.Fatalf("preferred = %q, want %q", c.Preferred(), leader.URL)
	}
}

func Test_Client_LoginKeepsTokenLogoutForgetsIt(t *testing.T) {
	var rec clRecorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/sessions":
			clWriteJSON(w, http.StatusOK, LoginResponse{Token: "t0k", Node: "n1"})
		case "GET /v1/account":
			if r.URL.Query().Get("consistency") != "stale" {
				clWriteErr(w, http.StatusBadRequest, CodeBadRequest, "want stale", "")
				return
			}
			clWriteJSON(w, http.StatusOK, Account{Username: "ann"})
		case "DELETE /v1/sessions/current":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	c := clMustNewClient(t, ClientConfig{Nodes: []string{strings.TrimPrefix(srv.URL, "http://")}})
	if _, err := c.Login(context.Background(), "ann", "password1"); err != nil {
		t.Fatal(err)
	}
	if c.Token() != "t0k" {
		t.Fatalf("token = %q", c.Token())
	}
	if _, err := c.Account(context.Background(), Stale); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.Token() != "" {
		t.Fatalf("token after logout = %q", c.Token())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.auths[1] != "Bearer t0k" || rec.auths[2] != "Bearer t0k" {
		t.Fatalf("Authorization headers %q", rec.auths)
	}
}

func Test_Client_TransferNotRepeatedWhenOutcomeUnknown(t *testing.T) {
	var rec clRecorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		clWriteErr(w, http.StatusServiceUnavailable, CodeOutcomeUnknown, "lost", "")
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	err := c.TransferLeadership(context.Background(), "n2")
	if !errors.Is(err, ErrOutcomeUnknown) || rec.count() != 1 {
		t.Fatalf("err = %v after %d requests; want outcome unknown after 1", err, rec.count())
	}
}

func Test_Client_ResponseSizeLimited(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"`))
		_, _ = w.Write([]byte(strings.Repeat("x", MaxResponseBytes)))
		_, _ = w.Write([]byte(`"}`))
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}})
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func Test_NormalizeAddr(t *testing.T) {
	good := map[string]string{
		"127.0.0.1:8080":        "http://127.0.0.1:8080",
		" node1:80 ":            "http://node1:80",
		"http://node1:80/":      "http://node1:80",
		"https://n.example:443": "https://n.example:443",
		"[::1]:8080":            "http://[::1]:8080",
	}
	for in, want := range good {
		got, err := NormalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ftp://x:1", "http://x:1/path", "http://"} {
		if _, err := NormalizeAddr(in); err == nil {
			t.Errorf("NormalizeAddr(%q) accepted", in)
		}
	}
}

// A node that drops the connection while an order stream is being opened
// (it died mid-request) must not leave OpenOrderStream waiting forever for
// the stream's request body, which stays open by design; the next node
// gets the stream.
func Test_Client_OrderStreamOpenSurvivesDroppedConnection(t *testing.T) {
	dropper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dropper.Close()
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		_, _ = io.Copy(io.Discard, r.Body) // until the client ends the stream
	}))
	defer live.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{dropper.URL, live.URL}, Token: "tok", Timeout: 500 * time.Millisecond})
	type result struct {
		s   *OrderStream
		err error
	}
	got := make(chan result, 1)
	go func() {
		s, err := c.OpenOrderStream(context.Background())
		got <- result{s, err}
	}()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("OpenOrderStream: %v", r.err)
		}
		r.s.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("OpenOrderStream still waiting 10 s after the first node dropped the connection")
	}
}

// Keys and client order IDs made later sort later (the state machine's
// per-account indexes then grow at the end), and stay unique and of the
// same shape.
func TestGeneratedKeysIncreaseOverTime(t *testing.T) {
	seen := map[string]bool{}
	var prevKey, prevCID string
	for i := range 200 {
		k, c := NewIdempotencyKey(), NewClientID()
		if len(k) != 32 || len(c) != 26 || c[:2] != "c-" {
			t.Fatalf("shapes: key %q, client id %q", k, c)
		}
		if seen[k] || seen[c] {
			t.Fatalf("repeat: %q %q", k, c)
		}
		seen[k], seen[c] = true, true
		if i > 0 && (k[:12] < prevKey[:12] || c[2:14] < prevCID[2:14]) {
			t.Fatalf("time prefix went back: %q after %q, %q after %q", k, prevKey, c, prevCID)
		}
		prevKey, prevCID = k, c
		if i == 100 {
			before := k[:12]
			deadline := time.Now().Add(5 * time.Second)
			for NewIdempotencyKey()[:12] == before && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := NewIdempotencyKey(); got <= k {
				t.Fatalf("a key a millisecond later %q does not sort after %q", got, k)
			}
		}
	}
}

// Pipelined stream requests, written together by the stream's writer,
// are each answered by their own tag; when the connection breaks with
// requests in flight, each of them fails as outcome unknown with its
// client order ID, later ones fail at once, and Close returns.
func Test_Client_OrderStreamPipelinesAndBreaks(t *testing.T) {
	const answered = 40 // the server answers this many, then drops the connection
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for n := 0; sc.Scan(); n++ {
			var req StreamRequest
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Errorf("server: bad line %q: %v", sc.Bytes(), err)
				return
			}
			if n == answered { // drop the connection
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				conn.Close()
				return
			}
			id, _ := strconv.ParseUint(strings.TrimPrefix(req.Order.ClientID, "cid-"), 10, 64)
			b, _ := json.Marshal(StreamReply{Tag: req.Tag, Status: 200, Order: &Order{OrderID: id + 1000, ClientID: req.Order.ClientID}})
			_, _ = w.Write(append(b, '\n'))
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Token: "tok", Timeout: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// First the answered ones, 8 in flight at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range answered {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cid := fmt.Sprintf("cid-%d", i)
			o, err := s.Place(ctx, OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"})
			if err != nil || o.ClientID != cid || o.OrderID != uint64(i)+1000 {
				t.Errorf("%s: got %+v, %v", cid, o, err)
			}
		}()
	}
	wg.Wait()
	// The next one breaks the connection: it and the ones behind it have an
	// unknown outcome, each with its own client ID.
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cid := fmt.Sprintf("cid-late-%d", i)
			_, err := s.Place(ctx, OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"})
			var ou *OutcomeUnknownError
			if !errors.As(err, &ou) {
				if !errors.Is(err, ErrUnavailable) { // sent after the break was seen
					t.Errorf("%s: %v, want outcome unknown", cid, err)
				}
				return
			}
			if ou.Key != cid {
				t.Errorf("outcome unknown names %q, want %q", ou.Key, cid)
			}
		}()
	}
	wg.Wait()
	if _, err := s.Place(ctx, OrderRequest{ClientID: "after", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("place on a broken stream: %v, want ErrUnavailable", err)
	}
	// The writer goroutine ends with the connection, Close or not.
	select {
	case <-s.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream's writer still runs 10 s after the connection broke")
	}
	closeWithin(t, s, 10*time.Second) // the connection broke
}

// A call that succeeds on another node after its Trading Server stopped
// answering moves the session (a reassignment), but a reassignment that
// cannot finish (the answering node reaches no leader) holds the answered
// call for at most reassignWait, not for the call's deadline.
func Test_Client_ReassignmentAfterFailoverIsBounded(t *testing.T) {
	for _, reassignAnswers := range []bool{true, false} {
		t.Run(fmt.Sprintf("reassign answers %v", reassignAnswers), func(t *testing.T) {
			release := make(chan struct{})
			var live *httptest.Server
			live = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/v1/whoami":
					clWriteJSON(w, http.StatusOK, WhoAmI{Username: "alice"})
				case "/v1/sessions/current/reassign":
					if !reassignAnswers {
						select { // a Raft write that finds no leader
						case <-release:
						case <-r.Context().Done():
						}
						return
					}
					clWriteJSON(w, http.StatusOK, Assignment{Node: "n2", NodeAddr: live.URL})
				default:
					http.NotFound(w, r)
				}
			}))
			defer live.Close()
			defer close(release)

			dead := clDeadAddr(t)
			c := clMustNewClient(t, ClientConfig{Nodes: []string{dead, live.URL}, Deadline: 20 * time.Second, Timeout: 10 * time.Second})
			c.SetToken("tok")
			c.SetAssigned("n1", dead)
			start := time.Now()
			who, err := c.WhoAmI(context.Background())
			took := time.Since(start)
			if err != nil || who.Username != "alice" {
				t.Fatalf("WhoAmI = %+v, %v", who, err)
			}
			id, _ := c.Assigned()
			if reassignAnswers {
				if id != "n2" {
					t.Fatalf("assigned to %q after the reassignment, want n2", id)
				}
				return
			}
			if took > reassignWait+2*time.Second {
				t.Fatalf("an answered call took %v: the reassignment was not bounded by %v", took, reassignWait)
			}
			if id != "n1" {
				t.Fatalf("assigned to %q though the reassignment never answered", id)
			}
		})
	}
}
