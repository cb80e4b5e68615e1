package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/hats-trading/hats/market"
)

// Every request and reply survives the binary encoding field for field,
// and a body cut short anywhere, or with bytes after its last field, is
// refused rather than read as something else.
func TestStreamBinaryCodecRoundTrip(t *testing.T) {
	reqs := []StreamRequest{
		{Tag: "1", Op: "place", Order: &OrderRequest{ClientID: "c-1", Symbol: "AAPL", Side: "buy", Type: "stop_limit", TIF: "day",
			Quantity: 12, LimitPrice: "150.25", StopPrice: "149.00", PostOnly: true}},
		{Tag: "", Op: "place", Order: &OrderRequest{Symbol: "msft", Side: "sell", Quantity: -3}},
		{Tag: "x-99", Op: "cancel", OrderID: 1 << 40},
	}
	for _, req := range reqs {
		body, err := appendStreamRequest(nil, &req)
		if err != nil {
			t.Fatalf("encode %+v: %v", req, err)
		}
		got, err := decodeStreamRequest(body)
		if err != nil || !reflect.DeepEqual(got, req) {
			t.Fatalf("round trip of %+v: got %+v, %v", req, got, err)
		}
		checkRefusesDamage(t, body, func(b []byte) error { _, err := decodeStreamRequest(b); return err })
	}
	// The op defaults to place, as in NDJSON; a place needs its order.
	if body, err := appendStreamRequest(nil, &StreamRequest{Order: &OrderRequest{Symbol: "A"}}); err != nil {
		t.Fatal(err)
	} else if got, _ := decodeStreamRequest(body); got.Op != "place" {
		t.Fatalf("default op decoded as %q", got.Op)
	}
	for _, bad := range []StreamRequest{{Op: "place"}, {Op: "amend", OrderID: 1}} {
		if _, err := appendStreamRequest(nil, &bad); err == nil {
			t.Fatalf("%+v encoded", bad)
		}
	}
	// An unknown op code is refused with the tag still known.
	body := append(appendStr(nil, "t7"), 9)
	if got, err := decodeStreamRequest(body); !errors.Is(err, errStreamFrame) || got.Tag != "t7" {
		t.Fatalf("op 9: %+v, %v", got, err)
	}

	reps := []StreamReply{
		{Tag: "1", Status: 200, Order: &Order{OrderID: 42, ClientID: "c-1", Symbol: "AAPL", Side: "buy", Type: "limit", TIF: "gtc",
			Quantity: 10, FilledQuantity: 4, RemainingQuantity: 6, LimitPrice: "150.00", StopPrice: "", AvgFillPrice: "149.50",
			Status: "partially_filled", Reason: "", PostOnly: true, Triggered: true, Replayed: true,
			CreatedAt: "2026-11-26T08:00:00Z", UpdatedAt: "2026-11-26T08:00:01Z", ExpiresAt: "", AppliedIndex: 77}},
		{Tag: "2", Status: 422, Error: &APIError{Status: 422, Code: "insufficient_funds", Message: "order needs $1.00"},
			Order: &Order{OrderID: 43, Status: "rejected", RejectCode: "insufficient_funds"}},
		{Tag: "3", Status: 503, Error: &APIError{Status: 503, Code: "no_leader", Message: "no leader", Leader: "127.0.0.1:7101"}},
		{Status: 400, Error: &APIError{Status: 400, Code: "bad_request", Message: "order stream: truncated frame"}},
	}
	for _, rep := range reps {
		body := appendStreamReply(nil, &rep)
		got, err := decodeStreamReply(body)
		if err != nil || !reflect.DeepEqual(got, rep) {
			t.Fatalf("round trip of %+v: got %+v, %v", rep, got, err)
		}
		checkRefusesDamage(t, body, func(b []byte) error { _, err := decodeStreamReply(b); return err })
	}
}

// checkRefusesDamage decodes every strict prefix of body, and body with a
// byte after it, and wants each refused as a malformed frame.
func checkRefusesDamage(t *testing.T, body []byte, decode func([]byte) error) {
	t.Helper()
	for n := range len(body) {
		if err := decode(body[:n]); !errors.Is(err, errStreamFrame) {
			t.Fatalf("%d of %d bytes: %v, want a malformed frame", n, len(body), err)
		}
	}
	if err := decode(append(body[:len(body):len(body)], 0)); !errors.Is(err, errStreamFrame) {
		t.Fatalf("a trailing byte: %v, want a malformed frame", err)
	}
}

func TestMediaType(t *testing.T) {
	for in, want := range map[string]string{
		"application/x-hats-order-stream":                 StreamContentBinary,
		" Application/X-Hats-Order-Stream ; charset=none": StreamContentBinary,
		"application/x-ndjson":                            StreamContentJSON,
		"":                                                "",
	} {
		if got := mediaType(in); got != want {
			t.Errorf("mediaType(%q) = %q, want %q", in, got, want)
		}
	}
}

// A client that asks for the binary encoding of a server that answers
// NDJSON (one that predates the binary encoding) speaks NDJSON on that
// stream.
func TestOrderStreamFallsBackToNDJSON(t *testing.T) {
	asked := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			// As a server that predates the binary encoding would answer
			// an upgraded stream's open: a stream of no requests.
			w.Header().Set("Content-Type", StreamContentJSON)
			return
		}
		asked <- r.Header.Get("Content-Type")
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", StreamContentJSON)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			var req StreamRequest
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Errorf("server: not an NDJSON line: %q", sc.Bytes())
				return
			}
			b, _ := json.Marshal(StreamReply{Tag: req.Tag, Status: 200, Order: &Order{OrderID: 7, ClientID: req.Order.ClientID}})
			_, _ = w.Write(append(b, '\n'))
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := openTestStream(ctx, t, srv.URL)
	defer s.Close()
	if ct := <-asked; ct != StreamContentBinary || s.Binary() {
		t.Fatalf("asked for %q, stream binary %v; want the binary encoding asked and NDJSON spoken", ct, s.Binary())
	}
	o, err := s.Place(ctx, OrderRequest{ClientID: "c-1", Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "1.00"})
	if err != nil || o.OrderID != 7 || o.ClientID != "c-1" {
		t.Fatalf("place: %+v %v", o, err)
	}
}

// Whatever bytes arrive, decoding never panics, and what decodes encodes
// back to the same message.
func FuzzDecodeStreamRequest(f *testing.F) {
	for _, req := range []StreamRequest{
		{Tag: "1", Op: "place", Order: &OrderRequest{ClientID: "c", Symbol: "AAPL", Side: "buy", Quantity: 3, LimitPrice: "1.00", PostOnly: true}},
		{Tag: "2", Op: "cancel", OrderID: 9},
	} {
		b, _ := appendStreamRequest(nil, &req)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeStreamRequest(body)
		if err != nil {
			return
		}
		again, err := appendStreamRequest(nil, &req)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", req, err)
		}
		if back, err := decodeStreamRequest(again); err != nil || !reflect.DeepEqual(back, req) {
			t.Fatalf("%+v re-decoded as %+v, %v", req, back, err)
		}
	})
}

func FuzzDecodeStreamReply(f *testing.F) {
	for _, rep := range []StreamReply{
		{Tag: "1", Status: 200, Order: &Order{OrderID: 1, Symbol: "AAPL", Quantity: 5, Replayed: true}},
		{Tag: "2", Status: 409, Error: &APIError{Status: 409, Code: "c", Message: "m"}},
	} {
		f.Add(appendStreamReply(nil, &rep))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rep, err := decodeStreamReply(body)
		if err != nil {
			return
		}
		if back, err := decodeStreamReply(appendStreamReply(nil, &rep)); err != nil || !reflect.DeepEqual(back, rep) {
			t.Fatalf("%+v re-decoded as %+v, %v", rep, back, err)
		}
	})
}

// A binary reply that does not decode ends the stream: the request
// waiting fails as outcome unknown, later ones fail at once, and Close
// returns.
func TestOrderStreamBadBinaryReplyEndsStream(t *testing.T) {
	bothWays(t, func(t *testing.T, up bool) {
		e := &testStreamEnd{upgrade: up}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.serve(w, r, StreamContentBinary, "", func(br *bufio.Reader, w io.Writer, flush func()) {
				if _, err := readBlock(br, maxStreamLine); err != nil {
					return
				}
				_, _ = w.Write(appendBlock(nil, []byte{1, 'x'})) // a tag, then nothing
				flush()
			})
		}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s := openTestStream(ctx, t, srv.URL)
		if !s.Binary() || s.upgraded() != up {
			t.Fatalf("stream binary %v, upgraded %v; want binary, upgraded %v", s.Binary(), s.upgraded(), up)
		}
		_, err := s.Place(ctx, OrderRequest{ClientID: "c-1", Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "1.00"})
		var ou *OutcomeUnknownError
		if !errors.As(err, &ou) || ou.Key != "c-1" {
			t.Fatalf("place answered by a malformed frame: %v, want outcome unknown for c-1", err)
		}
		if _, err := s.Cancel(ctx, 1); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("cancel on the ended stream: %v, want ErrUnavailable", err)
		}
		closeWithin(t, s, 5*time.Second) // the stream has ended
	})
}

// openTestStream opens an order stream (asking for the binary encoding)
// to a test server.
func openTestStream(ctx context.Context, t *testing.T, url string) *OrderStream {
	t.Helper()
	c := clMustNewClient(t, ClientConfig{Nodes: []string{url}, Token: "tok", Timeout: 5 * time.Second})
	s, err := c.OpenOrderStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A node that accepts a stream and then stops answering (paused, or
// wedged): Abort must drop the connection at once, fail the request still
// waiting as outcome unknown, and leave Close nothing to wait for.
func TestOrderStreamAbortDoesNotWaitForSilentNode(t *testing.T) {
	bothWays(t, func(t *testing.T, up bool) { abortSilentNode(t, &testStreamEnd{upgrade: up}) })
}

func abortSilentNode(t *testing.T, e *testStreamEnd) {
	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served := false
		e.serve(w, r, StreamContentBinary, "", func(br *bufio.Reader, _ io.Writer, _ func()) {
			served = true
			_, _ = io.Copy(io.Discard, br) // reads every request, answers none
		})
		// Only a dropped connection ends the stream: a paused node would
		// keep it open.
		if served {
			close(gone)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := openTestStream(ctx, t, srv.URL)
	order := func(cid string) OrderRequest {
		return OrderRequest{ClientID: cid, Symbol: "AAPL", Side: "buy", Quantity: 1, LimitPrice: "1.00"}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := s.Place(short, order("c-1"))
	cancelShort()
	var ou *OutcomeUnknownError
	if !errors.As(err, &ou) || ou.Key != "c-1" {
		t.Fatalf("place with no answer by its deadline: %v, want outcome unknown for c-1", err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := s.Place(context.Background(), order("c-2"))
		waiting <- err
	}()
	aborted := make(chan struct{})
	go func() { s.Abort(); close(aborted) }()
	for name, ch := range map[string]chan struct{}{"Abort": aborted, "the server's read of the request body": gone} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waiting 5 s after Abort was called", name)
		}
	}
	select {
	case err := <-waiting:
		// Either it was queued and failed as unknown, or it was refused
		// because the stream was already closing; both name no outcome.
		if !errors.As(err, &ou) && !errors.Is(err, ErrUnavailable) {
			t.Fatalf("place waiting at Abort: %v, want outcome unknown or unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("place waiting at Abort still waiting 5 s later")
	}
	if _, err := s.Place(ctx, order("c-3")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("place after Abort: %v, want ErrUnavailable", err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); s.Abort(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close and a second Abort after Abort still waiting 5 s later")
	}
}

// Acknowledgements are encoded straight from the state machine's order;
// the bytes must be exactly those of the order's API view, for orders
// with and without prices, fills, times and errors.
func TestStreamOrderReplyMatchesView(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(vals ...int64) int64 { return vals[rng.IntN(len(vals))] }
	errs := []*APIError{nil, {Status: 422, Code: "insufficient_funds", Message: "order needs 5.00, 1.00 available"}, {Status: 503, Code: CodeUnavailable, Message: "x", Leader: "127.0.0.1:1"}}
	for i := range 2000 {
		o := &market.Order{
			ID: rng.Uint64(), ClientID: fmt.Sprintf("c-%d", i), Account: 7, Symbol: []string{"AAPL", "BRK.B", "X"}[rng.IntN(3)],
			Side: market.Side(1 + rng.IntN(2)), Type: market.Type(1 + rng.IntN(4)), TIF: market.TIF(1 + rng.IntN(4)),
			PostOnly: rng.IntN(2) == 0, Triggered: rng.IntN(2) == 0,
			Qty: pick(1, 100, market.MaxQuantity), Limit: pick(0, 1, 99, 12_345, market.MaxPrice), Stop: pick(0, 5, 100_000),
			Status: market.Status(1 + rng.IntN(6)), Reason: []string{"", "self trade"}[rng.IntN(2)], RejectCode: []string{"", "collar"}[rng.IntN(2)],
			Created: pick(0, 1, 1_700_000_000_123_456_789, 1_700_000_000_000_000_000), Updated: pick(0, 1_700_000_001_000_000_001),
			ExpiresAt: pick(0, 1_800_000_000_000_000_000),
		}
		o.Filled = rng.Int64N(o.Qty + 1)
		o.Notional = o.Filled * pick(1, 101, 12_345)
		replay, index := rng.IntN(2) == 0, rng.Uint64()
		apiErr := errs[rng.IntN(len(errs))]
		ov := OrderView(o, replay, index)
		rep := StreamReply{Tag: fmt.Sprint(i), Error: apiErr, Order: &ov, Status: 200}
		if apiErr != nil {
			rep.Status = apiErr.Status
		}
		want := appendStreamReply(nil, &rep)
		got := appendStreamOrderReply(nil, rep.Tag, apiErr, o, replay, index)
		if !bytes.Equal(got, want) {
			t.Fatalf("order %+v: direct encoding\n%x\nwant (from the view)\n%x", o, got, want)
		}
		back, err := decodeStreamReply(got)
		if err != nil || back.Order == nil || *back.Order != ov {
			t.Fatalf("order %+v: decodes to %+v, %v; want %+v", o, back.Order, err, ov)
		}
	}
}
