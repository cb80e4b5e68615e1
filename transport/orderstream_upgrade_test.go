package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
)

// testStreamEnd serves the server's end of an order stream in tests that
// play a node by hand, in either of the two ways a node may answer the Go
// client's open: taken over from HTTP (upgrade: 101, then frames on the
// connection), or as a server that predates that (the upgraded open is
// answered with an empty plain stream, as such a server reading no
// requests would, and the client's second open becomes a full-duplex
// HTTP exchange). Hijacked connections are tracked so that tests can
// break them (httptest's CloseClientConnections does not see them).
type testStreamEnd struct {
	upgrade bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// serve answers r with contentType (and leader in HeaderLeader, when not
// "") and calls fn with the stream's request reader and reply writer
// (flush sends what fn wrote). When fn returns the stream stays open until
// the client drops the connection (a request body's end is not the
// connection's).
func (e *testStreamEnd) serve(w http.ResponseWriter, r *http.Request, contentType, leader string, fn func(br *bufio.Reader, w io.Writer, flush func())) {
	upgrading := r.Header.Get("Upgrade") != ""
	if upgrading && !e.upgrade {
		w.Header().Set("Content-Type", contentType)
		return // no requests came, so none are answered
	}
	if upgrading {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		e.mu.Lock()
		if e.conns == nil {
			e.conns = map[net.Conn]struct{}{}
		}
		e.conns[conn] = struct{}{}
		e.mu.Unlock()
		defer func() {
			conn.Close()
			e.mu.Lock()
			delete(e.conns, conn)
			e.mu.Unlock()
		}()
		hdr := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + orderProto + "\r\nContent-Type: " + contentType + "\r\n"
		if leader != "" {
			hdr += HeaderLeader + ": " + leader + "\r\n"
		}
		_, _ = brw.WriteString(hdr + "\r\n")
		_ = brw.Flush()
		fn(brw.Reader, brw.Writer, func() { _ = brw.Flush() })
		_, _ = io.Copy(io.Discard, brw.Reader) // until the client drops the connection
		return
	}
	_ = http.NewResponseController(w).EnableFullDuplex()
	w.Header().Set("Content-Type", contentType)
	if leader != "" {
		w.Header().Set(HeaderLeader, leader)
	}
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	br := bufio.NewReader(r.Body)
	fn(br, w, func() { w.(http.Flusher).Flush() })
	_, _ = io.Copy(io.Discard, br)
	<-r.Context().Done()
}

// breakAll closes every hijacked stream connection.
func (e *testStreamEnd) breakAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c := range e.conns {
		c.Close()
	}
}

// bothWays runs fn as a subtest for a stream taken over from HTTP
// (upgraded true) and for one that stays HTTP.
func bothWays(t *testing.T, fn func(t *testing.T, upgraded bool)) {
	for _, up := range []bool{true, false} {
		name := "upgraded"
		if !up {
			name = "http"
		}
		t.Run(name, func(t *testing.T) { fn(t, up) })
	}
}

// closeWithin closes s and fails t unless Close returns, with no error,
// within limit.
func closeWithin(t *testing.T, s *OrderStream, limit time.Duration) {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(limit):
		t.Fatalf("Close still waiting %v later", limit)
	}
}

// nowBackend answers every order-stream command at once, as unknown
// order 1 (a cancel's answer), or holds it when hold is set, and names a
// leader.
type nowBackend struct {
	asyncBackend
	hold bool
}

func (b *nowBackend) LeaderHTTP() string { return "127.0.0.1:1" }

func (b *nowBackend) ApplyAsync(ctx context.Context, cmd *fsm.Command, done func(*fsm.Result, error)) {
	if b.hold {
		b.asyncBackend.ApplyAsync(ctx, cmd, done)
		return
	}
	done(&fsm.Result{Code: fsm.CodeUnknownOrder, Message: "unknown order 1"}, nil)
}

// openConns is how many hijacked connections the server still serves.
func (s *Server) openConns() int {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return len(s.conns)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting 5 s for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The Go client's binary streams leave HTTP: the node answers 101 with
// the headers a plain stream's 200 carries (the leader it names), requests
// and replies are frames on the connection, and Close sends the empty
// frame that ends the requests, gets every answer and returns once the
// node has closed its end.
func TestOrderStreamUpgraded(t *testing.T) {
	api := NewServer(&nowBackend{}, nil)
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := openTestStream(ctx, t, srv.URL)
	if !s.upgraded() || !s.Binary() || s.Leader() != "http://127.0.0.1:1" {
		t.Fatalf("stream upgraded %v, binary %v, leader %q; want upgraded, binary, the node's leader", s.upgraded(), s.Binary(), s.Leader())
	}
	if n := api.openConns(); n != 1 {
		t.Fatalf("the server tracks %d taken-over connections, want 1", n)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Cancel(ctx, 1)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != CodeUnknownOrder {
				t.Errorf("cancel: %v, want 404 unknown_order", err)
			}
		}()
	}
	wg.Wait()
	closeWithin(t, s, 5*time.Second) // the node ends the stream after the empty frame
	waitFor(t, "the server to let the connection go", func() bool { return api.openConns() == 0 })
	if _, err := s.Cancel(ctx, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("cancel after Close: %v, want ErrUnavailable", err)
	}
}

// A node that predates upgraded streams answers the upgrade as a plain
// stream with no requests (modelled by the real server with the Upgrade
// header taken off), and a proxy that does not pass upgrades on answers
// it with an error: either way the client opens a plain HTTP stream
// instead. A refusal of the caller (401) is not retried that way.
func TestOrderStreamUpgradeRefusedFallsBack(t *testing.T) {
	for _, how := range []string{"old node", "proxy", "unauthenticated"} {
		t.Run(how, func(t *testing.T) {
			api := NewServer(&nowBackend{}, nil)
			upgrades, opens := 0, 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				opens++
				if r.Header.Get("Upgrade") != "" {
					upgrades++
					switch how {
					case "proxy":
						writeError(w, &APIError{Status: 426, Code: "upgrade_required", Message: "no upgrades here"})
						return
					case "unauthenticated":
						writeError(w, &APIError{Status: 401, Code: CodeUnauthenticated, Message: "who are you"})
						return
					}
					r.Header.Del("Upgrade")
				}
				api.ServeHTTP(w, r)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Token: "tok", Timeout: 5 * time.Second})
			s, err := c.OpenOrderStream(ctx)
			if how == "unauthenticated" {
				if !errors.Is(err, ErrUnauthenticated) || opens != 1 {
					t.Fatalf("open refused with 401: %v after %d opens, want ErrUnauthenticated after 1", err, opens)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.upgraded() || !s.Binary() || upgrades != 1 || opens != 2 {
				t.Fatalf("stream upgraded %v, binary %v, %d upgrades asked in %d opens; want one refused upgrade, then a binary HTTP stream", s.upgraded(), s.Binary(), upgrades, opens)
			}
			var ae *APIError
			if _, err := s.Cancel(ctx, 1); !errors.As(err, &ae) || ae.Code != CodeUnknownOrder {
				t.Fatalf("cancel: %v, want unknown_order", err)
			}
		})
	}
}

// An upgraded stream ends with the node's shutdown (http.Server does not
// see taken-over connections: CloseStreams closes them) and with the
// context it was opened with; a request waiting then has an unknown
// outcome, and later ones are refused.
func TestOrderStreamUpgradedEnds(t *testing.T) {
	for _, how := range []string{"shutdown", "context"} {
		t.Run(how, func(t *testing.T) {
			be := &nowBackend{hold: true}
			api := NewServer(be, nil)
			srv := httptest.NewServer(api)
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sctx, end := context.WithCancel(ctx)
			defer end()
			c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Token: "tok", Timeout: 5 * time.Second})
			s, err := c.OpenOrderStream(sctx)
			if err != nil {
				t.Fatal(err)
			}
			placed := make(chan error, 1)
			go func() {
				_, err := s.Cancel(ctx, 1)
				placed <- err
			}()
			var held []func() // answered once the stream is over, so that the server's handler ends
			defer func() {
				for _, cb := range held {
					cb()
				}
			}()
			waitFor(t, "the cancel to reach the backend", func() bool {
				cbs, n := be.take()
				held = append(held, cbs...)
				return n == 1
			})
			if how == "shutdown" {
				api.CloseStreams()
			} else {
				end()
			}
			select {
			case err := <-placed:
				var ou *OutcomeUnknownError
				if !errors.As(err, &ou) {
					t.Fatalf("cancel in flight: %v, want outcome unknown", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("cancel in flight still waiting 5 s after the stream's end")
			}
			if _, err := s.Cancel(ctx, 1); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("cancel after the end: %v, want ErrUnavailable", err)
			}
			s.Close()
		})
	}
}

// watchBackend is nowBackend with a leader the test moves
// (LeaderWatcher).
type watchBackend struct {
	nowBackend
	mu      sync.Mutex
	leader  string
	changed chan struct{}
	looks   int // LeaderChanged calls: one per look of a stream's watcher
}

func (b *watchBackend) LeaderHTTP() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}

func (b *watchBackend) LeaderChanged() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.looks++
	return b.changed
}

func (b *watchBackend) looked() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.looks
}

func (b *watchBackend) move(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.leader = addr
	close(b.changed)
	b.changed = make(chan struct{})
}

// A binary stream, upgraded or not, is told when its node names another
// leader: it stops reporting AtLeader, names the new leader, makes it the
// client's hint for later opens, and keeps answering its requests. The
// node naming itself again makes the stream AtLeader again.
func TestOrderStreamLeaderMovedNotice(t *testing.T) {
	bothWays(t, func(t *testing.T, up bool) {
		be := &watchBackend{changed: make(chan struct{})}
		api := NewServer(be, nil)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !up {
				r.Header.Del("Upgrade") // a node that predates upgraded streams
			}
			api.ServeHTTP(w, r)
		}))
		defer srv.Close()
		self := strings.TrimPrefix(srv.URL, "http://")
		be.move(self)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := clMustNewClient(t, ClientConfig{Nodes: []string{srv.URL}, Token: "tok", Timeout: 5 * time.Second})
		s, err := c.OpenOrderStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.upgraded() != up || !s.AtLeader() {
			t.Fatalf("stream upgraded %v, at leader %v; want upgraded %v, at leader", s.upgraded(), s.AtLeader(), up)
		}
		be.move("127.0.0.1:1")
		waitFor(t, "the stream to name the new leader", func() bool {
			return !s.AtLeader() && s.Leader() == "http://127.0.0.1:1" && c.streamLeaderHint() == "http://127.0.0.1:1"
		})
		var ae *APIError
		if _, err := s.Cancel(ctx, 1); !errors.As(err, &ae) || ae.Code != CodeUnknownOrder {
			t.Fatalf("cancel after the notice: %v, want unknown_order", err)
		}
		be.move("")
		be.move(self)
		waitFor(t, "the stream to be at the leader again", func() bool { return s.AtLeader() })
		if _, err := s.Cancel(ctx, 1); !errors.As(err, &ae) || ae.Code != CodeUnknownOrder {
			t.Fatalf("cancel: %v, want unknown_order", err)
		}
	})
}

// An interval with no leader (an election) sends no notice, and neither
// does a leader change that ends where the stream's last notice (or open)
// left it: the first frame after them is the answer to the next request.
func TestOrderStreamNoNoticeWithoutNewLeader(t *testing.T) {
	be := &watchBackend{changed: make(chan struct{}), leader: "127.0.0.1:7"}
	srv := httptest.NewServer(NewServer(be, nil))
	defer srv.Close()
	w, replies, end := openRawStream(t, srv.URL, true)
	defer end()
	// Each move is seen: the watcher looks again after it.
	for _, lead := range []string{"", "127.0.0.1:7"} {
		n := be.looked()
		be.move(lead)
		waitFor(t, "the stream's watcher to look at the move", func() bool { return be.looked() > n })
	}
	body, _ := appendStreamRequest(nil, &StreamRequest{Tag: "t1", Op: "cancel", OrderID: 1})
	if _, err := w.Write(appendBlock(nil, body)); err != nil {
		t.Fatal(err)
	}
	frame, err := readBlock(bufio.NewReader(replies), maxStreamReply)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := decodeStreamReply(frame)
	if err != nil || rep.Tag != "t1" {
		t.Fatalf("first frame: %+v %v, want the answer to t1", rep, err)
	}
}
