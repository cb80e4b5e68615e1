package transport

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeStreamNode is an order-stream endpoint that names a leader (or
// none), counts the streams opened at it and those that have ended, and
// answers nothing.
type fakeStreamNode struct {
	srv    *httptest.Server
	leader atomic.Pointer[string] // value of HeaderLeader ("" or nil: none)
	silent bool                   // never answers the open at all (a paused node)
	opened atomic.Int32
	ended  atomic.Int32
	end    testStreamEnd // upgrades streams, as nodes do
}

func newFakeStreamNode(t *testing.T, silent bool) *fakeStreamNode {
	t.Helper()
	f := &fakeStreamNode{silent: silent, end: testStreamEnd{upgrade: true}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/orders/stream" {
			http.NotFound(w, r)
			return
		}
		f.opened.Add(1)
		defer f.ended.Add(1)
		if f.silent { // reads what comes, answers nothing, until the client hangs up
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		}
		var lead string
		if l := f.leader.Load(); l != nil {
			lead = *l
		}
		f.end.serve(w, r, StreamContentBinary, lead, func(br *bufio.Reader, _ io.Writer, _ func()) {
			_, _ = io.Copy(io.Discard, br)
		})
	}))
	t.Cleanup(func() {
		// Streams a failed test left open would keep Close waiting.
		f.breakStreams()
		f.srv.Close()
	})
	return f
}

// breakStreams drops every stream open at the node.
func (f *fakeStreamNode) breakStreams() {
	f.srv.CloseClientConnections()
	f.end.breakAll()
}

func (f *fakeStreamNode) name(addr string) { f.leader.Store(&addr) }

// hostPort is the server's address as a node records it (no scheme).
func (f *fakeStreamNode) hostPort() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func waitCount(t *testing.T, what string, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d", what, n.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A stream opened at a follower that names the leader moves there: the
// follower's stream is closed unused, and the next stream opens at the
// leader without asking the follower again.
func TestOrderStreamMovesToNamedLeader(t *testing.T) {
	leader, follower := newFakeStreamNode(t, false), newFakeStreamNode(t, false)
	leader.name(leader.hostPort())
	follower.name(leader.hostPort())
	c := clMustNewClient(t, ClientConfig{Nodes: []string{follower.srv.URL}, Token: "tok"})
	ctx := context.Background()
	s, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Node() != leader.srv.URL || !s.AtLeader() {
		t.Fatalf("stream at %s (at leader %v), want %s", s.Node(), s.AtLeader(), leader.srv.URL)
	}
	waitCount(t, "follower streams ended", &follower.ended, 1)
	s2, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Node() != leader.srv.URL || follower.opened.Load() != 1 || leader.opened.Load() != 2 {
		t.Fatalf("second stream at %s; opens: follower %d leader %d, want leader only", s2.Node(), follower.opened.Load(), leader.opened.Load())
	}
	if got := c.Preferred(); got != follower.srv.URL {
		t.Fatalf("calls now prefer %s, want the follower %s still", got, follower.srv.URL)
	}
	// A broken leader stream drops the hint, though the leader is still
	// up and still leads: the next open starts at the follower again (and
	// moves back to the leader the follower names).
	leader.breakStreams() // breaks s and s2
	<-s.done
	<-s2.done
	fOpened := follower.opened.Load()
	s3, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if follower.opened.Load() != fOpened+1 || s3.Node() != leader.srv.URL {
		t.Fatalf("after a broken leader stream: follower opened %d more (want 1: the hint is dropped), stream at %s", follower.opened.Load()-fOpened, s3.Node())
	}
	// A leadership transfer: the old leader, still up, names the
	// follower, which names itself. The hinted open lands at the old
	// leader, sees it no longer leads, and moves; later opens go straight
	// to the new leader.
	follower.name(follower.hostPort())
	leader.name(follower.hostPort())
	s4, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s4.Node() != follower.srv.URL || !s4.AtLeader() {
		t.Fatalf("after a transfer: stream at %s (at leader %v), want the new leader %s", s4.Node(), s4.AtLeader(), follower.srv.URL)
	}
	lOpened := leader.opened.Load()
	s5, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s5.Node() != follower.srv.URL || leader.opened.Load() != lOpened {
		t.Fatalf("next open at %s, old leader opened %d more; want the new leader directly", s5.Node(), leader.opened.Load()-lOpened)
	}
	for _, st := range []*OrderStream{s, s2, s3, s4, s5} {
		st.Abort()
	}
}

// A leader that does not answer the open costs at most the client's
// request timeout (capped by streamLeaderBudget), and the follower's
// stream is kept; so is a stream when the client keeps streams on its
// preferred node.
func TestOrderStreamStaysWhenLeaderSilentOrAsked(t *testing.T) {
	silent, follower := newFakeStreamNode(t, true), newFakeStreamNode(t, false)
	follower.name(silent.hostPort())
	c := clMustNewClient(t, ClientConfig{Nodes: []string{follower.srv.URL}, Token: "tok", Timeout: 300 * time.Millisecond})
	ctx := context.Background()
	start := time.Now()
	s, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("open took %v with a silent leader, want about the 300 ms timeout", took)
	}
	if s.Node() != follower.srv.URL || s.AtLeader() || silent.opened.Load() != 1 {
		t.Fatalf("stream at %s, leader tried %d times; want the follower's stream after one try", s.Node(), silent.opened.Load())
	}
	waitCount(t, "abandoned opens at the silent leader ended", &silent.ended, 1)
	if follower.ended.Load() != 0 {
		t.Fatal("the follower's stream was closed though the leader never answered")
	}
	s.Abort()
	// The silent leader is not tried again for a while.
	if s, err = c.OpenOrderStream(ctx); err != nil {
		t.Fatal(err)
	}
	if silent.opened.Load() != 1 || s.Node() != follower.srv.URL {
		t.Fatalf("second open: silent leader tried %d times in all, stream at %s; want one try, the follower", silent.opened.Load(), s.Node())
	}
	s.Abort()

	// Streams kept on the preferred node: the named leader is not tried.
	live := newFakeStreamNode(t, false)
	live.name(live.hostPort())
	follower.name(live.hostPort())
	c.SetOrderStreamsToLeader(false)
	s, err = c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Node() != follower.srv.URL || live.opened.Load() != 0 {
		t.Fatalf("streams asked to stay: stream at %s, leader opened %d", s.Node(), live.opened.Load())
	}
	s.Abort()
	c.SetOrderStreamsToLeader(true)
	s, err = c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Node() != live.srv.URL {
		t.Fatalf("streams to the leader again: stream at %s, want %s", s.Node(), live.srv.URL)
	}
	s.Abort()
}

// leaderURL takes the sender's scheme when the value has none and
// refuses what is not an address.
func TestLeaderURL(t *testing.T) {
	for _, c := range []struct{ h, from, want string }{
		{"10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.1:8080"},
		{"10.0.0.1:8080", "https://10.0.0.2:8080", "https://10.0.0.1:8080"},
		{"https://n1.example:443", "http://10.0.0.2:8080", "https://n1.example:443"},
		{"10.0.0.1:8080/path", "http://10.0.0.2:8080", ""},
		{"ftp://10.0.0.1", "http://10.0.0.2:8080", ""},
		{"http://10.0.0.1:8080", "https://10.0.0.2:8080", ""}, // no downgrade to plaintext
	} {
		if got := leaderURL(c.h, c.from); got != c.want {
			t.Errorf("leaderURL(%q, %q) = %q, want %q", c.h, c.from, got, c.want)
		}
	}
}

// Requests close together share a context whose deadline is the request
// timeout away; a replaced context stays live for the requests using it
// until its own deadline, then is released; the stream's end releases
// the rest.
func TestSharedDeadlines(t *testing.T) {
	d := &SharedDeadlines{Parent: context.Background(), Timeout: streamRequestTimeout, Step: streamDeadlineStep}
	t0 := time.Now() // the deadlines are real: the test must end well before t0+timeout
	a := d.Get(t0)
	if dl, ok := a.Deadline(); !ok || !dl.Equal(t0.Add(streamRequestTimeout)) {
		t.Fatalf("deadline %v %v, want %v", dl, ok, t0.Add(streamRequestTimeout))
	}
	if d.Get(t0.Add(streamDeadlineStep/2)) != a {
		t.Fatal("a request within a step got a context of its own")
	}
	b := d.Get(t0.Add(streamDeadlineStep))
	if b == a || a.Err() != nil {
		t.Fatalf("after a step: same context %v, first one ended %v (requests still use it)", b == a, a.Err())
	}
	// Long after: both earlier contexts are past their deadline and are
	// released; only the new one is kept.
	late := t0.Add(2 * streamRequestTimeout)
	c := d.Get(late)
	if len(d.live) != 1 || a.Err() == nil || b.Err() == nil || c.Err() != nil {
		t.Fatalf("%d live contexts; ended: a %v b %v c %v", len(d.live), a.Err(), b.Err(), c.Err())
	}
	for i := 1; i <= 500; i++ { // a long busy stream keeps a bounded set
		d.Get(late.Add(time.Duration(i) * streamDeadlineStep))
	}
	if max := int(streamRequestTimeout/streamDeadlineStep) + 1; len(d.live) > max {
		t.Fatalf("%d live contexts, want at most %d", len(d.live), max)
	}
	d.Release()
	if c.Err() == nil || len(d.live) != 0 {
		t.Fatalf("after release: c %v, %d live", c.Err(), len(d.live))
	}
}
