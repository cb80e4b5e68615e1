package cluster_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/hats-trading/hats/transport"
)

// Test_OrderStream_Pipelined: orders pipelined on one connection are each
// answered once, share Raft entries, and a repeated client ID returns the
// first order; in both encodings, on a stream kept on a follower (which
// forwards every order to the leader) and on one the client moved to the
// leader.
func Test_OrderStream_Pipelined(t *testing.T) {
	t.Run("binary-follower", func(t *testing.T) {
		testOrderStreamPipelined(t, (*transport.Client).OpenOrderStream, true, false)
	})
	t.Run("ndjson-follower", func(t *testing.T) {
		testOrderStreamPipelined(t, (*transport.Client).OpenOrderStreamNDJSON, false, false)
	})
	t.Run("binary-leader", func(t *testing.T) {
		testOrderStreamPipelined(t, (*transport.Client).OpenOrderStream, true, true)
	})
}

func testOrderStreamPipelined(t *testing.T, openStream func(*transport.Client, context.Context) (*transport.OrderStream, error), wantBinary, toLeader bool) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	follower := c.Followers()[0]
	cl := c.Client(follower)
	Trader(t, cl, "streamer")
	// The login's assignment may name any node: start from the follower.
	if err := cl.SetPreferred(follower.HTTPAddr); err != nil {
		t.Fatal(err)
	}
	cl.SetOrderStreamsToLeader(toLeader)
	if _, err := cl.Deposit(ctx, "1000000.00", ""); err != nil {
		t.Fatal(err)
	}
	WaitInstruments(t, cl)
	os, err := openStream(cl, ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Close()
	if os.Binary() != wantBinary {
		t.Fatalf("stream binary %v, want %v", os.Binary(), wantBinary)
	}
	leader := c.Leader()
	want := follower
	if toLeader {
		want = leader
	}
	if os.Node() != "http://"+want.HTTPAddr || os.AtLeader() != toLeader {
		t.Fatalf("stream at %s (at leader %v), want %s", os.Node(), os.AtLeader(), want.ID)
	}
	before := leader.Node.Raft().LastIndex()
	const workers, each = 8, 25
	var mu sync.Mutex
	ids := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				cid := fmt.Sprintf("s-%d-%d", w, i)
				o, err := os.Place(ctx, transport.OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "150.00"})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := ids[o.OrderID]; dup {
					t.Errorf("order %d answered for %s and %s", o.OrderID, prev, cid)
				}
				ids[o.OrderID] = cid
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if len(ids) != workers*each {
		t.Fatalf("%d distinct orders for %d requests", len(ids), workers*each)
	}
	entries := leader.Node.Raft().LastIndex() - before
	t.Logf("%d pipelined orders in %d Raft entries", workers*each, entries)
	// A repeated client ID returns the first order.
	again, err := os.Place(ctx, transport.OrderRequest{ClientID: "s-0-0", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "150.00"})
	if err != nil || !again.Replayed || ids[again.OrderID] != "s-0-0" {
		t.Fatalf("repeat: %+v %v", again, err)
	}
	// Bad requests are answered with an error and change nothing.
	if _, err := os.Place(ctx, transport.OrderRequest{Symbol: "NOPE", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"}); err == nil {
		t.Fatal("unknown symbol accepted")
	}
	var ae *transport.APIError
	if _, err := os.Place(ctx, transport.OrderRequest{Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 0, LimitPrice: "1.00"}); !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("zero quantity: %v", err)
	}
	// Cancel through the stream.
	for id := range ids {
		o, err := os.Cancel(ctx, id)
		if err != nil || o.Status != "cancelled" {
			t.Fatalf("cancel %d: %+v %v", id, o, err)
		}
		break
	}
	open, err := cl.Orders(ctx, transport.OrdersQuery{Open: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(open.Orders) != workers*each-1 {
		t.Fatalf("%d open orders, want %d", len(open.Orders), workers*each-1)
	}
	c.EnsureSame()
}

// Test_OrderStream_BinaryFrames: on the binary encoding, a frame that
// does not decode is answered with a 400 under its tag and the stream
// goes on; a frame longer than the limit is answered and ends the stream;
// neither changes the state.
func Test_OrderStream_BinaryFrames(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	tn := c.Followers()[0]
	cl := c.Client(tn)
	Trader(t, cl, "framer")
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+tn.HTTPAddr+"/v1/orders/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cl.Token())
	req.Header.Set("Content-Type", transport.StreamContentBinary)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != transport.StreamContentBinary {
		t.Fatalf("open: %d %q", resp.StatusCode, ct)
	}
	frame := func(body []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(body))), body...) }
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	br := bufio.NewReader(resp.Body)
	readReply := func() (tag string, status uint64, code string) {
		t.Helper()
		n, err := binary.ReadUvarint(br)
		if err != nil {
			t.Fatalf("reply length: %v", err)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("reply body: %v", err)
		}
		ln, k := binary.Uvarint(body)
		tag, body = string(body[k:k+int(ln)]), body[k+int(ln):]
		status, k = binary.Uvarint(body)
		flags, body := body[k], body[k+1:]
		if flags&1 != 0 {
			ln, k = binary.Uvarint(body)
			code = string(body[k : k+int(ln)])
		}
		return tag, status, code
	}
	// An unknown op, then a place cut short: each answered under its tag.
	if _, err := pw.Write(frame(append(str(nil, "t1"), 9))); err != nil {
		t.Fatal(err)
	}
	if tag, st, code := readReply(); tag != "t1" || st != 400 || code != transport.CodeBadRequest {
		t.Fatalf("unknown op: %q %d %q", tag, st, code)
	}
	if _, err := pw.Write(frame(str(append(str(nil, "t2"), 1), "c-1"))); err != nil {
		t.Fatal(err)
	}
	if tag, st, code := readReply(); tag != "t2" || st != 400 || code != transport.CodeBadRequest {
		t.Fatalf("truncated place: %q %d %q", tag, st, code)
	}
	// The stream still works: a cancel of an order that does not exist.
	if _, err := pw.Write(frame(binary.AppendUvarint(append(str(nil, "t3"), 2), 999999))); err != nil {
		t.Fatal(err)
	}
	if tag, st, _ := readReply(); tag != "t3" || st != 404 {
		t.Fatalf("cancel of a missing order: %q %d", tag, st)
	}
	// A frame over the limit ends the stream after one answer.
	if _, err := pw.Write(binary.AppendUvarint(nil, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, st, code := readReply(); st != 400 || code != transport.CodeBadRequest {
		t.Fatalf("oversized frame: %d %q", st, code)
	}
	if _, err := binary.ReadUvarint(br); !errors.Is(err, io.EOF) {
		t.Fatalf("stream still open after an oversized frame: %v", err)
	}
	pw.Close()
	orders, err := cl.Orders(ctx, transport.OrdersQuery{Limit: 10})
	if err != nil || len(orders.Orders) != 0 {
		t.Fatalf("the trader has orders after malformed frames: %+v %v", orders, err)
	}
	c.EnsureSame()
}

// Test_OrderStream_FollowsLeader: a client that knows only a follower has
// its order stream moved to the leader; when the leader dies the stream
// breaks, and the client's next streams open at the new leader once a
// node names it. A resend by client ID on the new stream returns the
// order the old leader acknowledged, and every node ends with the same
// state.
func Test_OrderStream_FollowsLeader(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	follower := c.Followers()[0]
	cl := c.Client(follower)
	Trader(t, cl, "mover")
	if _, err := cl.Deposit(ctx, "100000.00", ""); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetPreferred(follower.HTTPAddr); err != nil {
		t.Fatal(err)
	}
	WaitInstruments(t, cl)
	old := c.Leader()
	s, err := cl.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.AtLeader() || s.Node() != "http://"+old.HTTPAddr {
		t.Fatalf("stream at %s (at leader %v), want the leader %s", s.Node(), s.AtLeader(), old.ID)
	}
	req := transport.OrderRequest{ClientID: "move-1", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "100.00"}
	first, err := s.Place(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(old)
	if _, err := s.Place(ctx, transport.OrderRequest{ClientID: "move-2", Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "100.00"}); err == nil {
		t.Fatal("a place on the dead leader's stream succeeded")
	}
	s.Abort()
	var ns *transport.OrderStream
	Poll(t, 20e9, "a stream at the new leader", func() error {
		if ns != nil {
			ns.Abort()
			ns = nil
		}
		s, err := cl.OpenOrderStream(ctx)
		if err != nil {
			return err
		}
		ns = s
		if !s.AtLeader() || s.Node() == "http://"+old.HTTPAddr {
			return fmt.Errorf("stream at %s, at leader %v", s.Node(), s.AtLeader())
		}
		return nil
	})
	defer ns.Close()
	if nl := c.Leader(); ns.Node() != "http://"+nl.HTTPAddr {
		t.Fatalf("stream at %s, but the leader is %s", ns.Node(), nl.ID)
	}
	again, err := ns.Place(ctx, req)
	if err != nil || !again.Replayed || again.OrderID != first.OrderID {
		t.Fatalf("resend of move-1 at the new leader: %+v %v, want order %d replayed", again, err, first.OrderID)
	}
	c.EnsureSame()
}

// A leadership transfer moves streams without breaking them: the old
// leader's open stream gets a leader_moved notice, so it stops reporting
// AtLeader and names the new leader, and keeps working (the old leader
// now forwards); the client's next stream opens at the new leader (that
// the notice alone sends it there is the transport unit test's). Every
// node ends with the same state.
func Test_OrderStream_TransferNotice(t *testing.T) {
	c := NewCluster(t, 3, nil)
	ctx := context.Background()
	old := c.Leader()
	cl := c.Client(old)
	Trader(t, cl, "transferee")
	if _, err := cl.Deposit(ctx, "100000.00", ""); err != nil {
		t.Fatal(err)
	}
	WaitInstruments(t, cl)
	s, err := cl.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.AtLeader() || s.Node() != "http://"+old.HTTPAddr {
		t.Fatalf("stream at %s (at leader %v), want the leader %s", s.Node(), s.AtLeader(), old.ID)
	}
	order := func(cid string) transport.OrderRequest {
		return transport.OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "100.00"}
	}
	if _, err := s.Place(ctx, order("before")); err != nil {
		t.Fatal(err)
	}
	target := c.Followers()[0]
	if err := cl.TransferLeadership(ctx, target.ID); err != nil {
		t.Fatal(err)
	}
	want := "http://" + target.HTTPAddr
	Poll(t, 10e9, "the old leader's stream to name the new leader", func() error {
		if s.AtLeader() || s.Leader() != want {
			return fmt.Errorf("stream at leader %v, names %q", s.AtLeader(), s.Leader())
		}
		return nil
	})
	after, err := s.Place(ctx, order("after"))
	if err != nil || after.ClientID != "after" {
		t.Fatalf("place on the moved stream: %+v %v", after, err)
	}
	ns, err := cl.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if !ns.AtLeader() || ns.Node() != want {
		t.Fatalf("next stream at %s (at leader %v), want the new leader %s", ns.Node(), ns.AtLeader(), want)
	}
	if _, err := ns.Place(ctx, order("at-new-leader")); err != nil {
		t.Fatal(err)
	}
	c.EnsureSame()
}
