package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fwdBackend serves only what a forward stream needs; any other Backend
// method would panic on the nil embedded interface.
type fwdBackend struct {
	Backend
	key   string
	apply func(ctx context.Context, batch []byte) ([]byte, error)
}

func (b *fwdBackend) ClusterKey() string { return b.key }
func (b *fwdBackend) ApplyForwardedBatch(ctx context.Context, batch []byte) ([]byte, error) {
	return b.apply(ctx, batch)
}

func newForwardServer(t *testing.T, apply func(ctx context.Context, batch []byte) ([]byte, error)) (*Server, string) {
	t.Helper()
	s := NewServer(&fwdBackend{key: "k1", apply: apply}, nil)
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		hs.Close()
		s.CloseStreams()
	})
	return s, strings.TrimPrefix(hs.URL, "http://")
}

func openForward(t *testing.T, addr, key string) *ForwardStream {
	t.Helper()
	// The open's context ends right after: the stream must outlive it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	fs, err := NewPeer(5*time.Second, nil, nil).OpenForwardStream(ctx, addr, key)
	cancel()
	if err != nil {
		t.Fatalf("open forward stream: %v", err)
	}
	t.Cleanup(func() { _ = fs.Close() })
	return fs
}

// Batches on one stream are pipelined: each caller gets its own reply even
// when the leader answers them out of order (every third only after all
// the others are answered), and the leader sees each caller's deadline.
func TestForwardStream_PipelinesOutOfOrder(t *testing.T) {
	var mu sync.Mutex
	var deadlines []time.Duration
	release := make(chan struct{})
	_, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) {
		if dl, ok := ctx.Deadline(); ok {
			mu.Lock()
			deadlines = append(deadlines, time.Until(dl))
			mu.Unlock()
		}
		if batch[0]%3 == 0 { // every third answer comes late
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return append([]byte("re:"), batch...), nil
	})
	fs := openForward(t, addr, "k1")
	const n = 60
	var early, late sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg := &early
		if i%3 == 0 {
			wg = &late
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			in := fmt.Appendf([]byte{byte(i)}, "batch-%d", i)
			out, err := fs.Apply(ctx, in)
			if err != nil {
				errs <- fmt.Errorf("apply %d: %w", i, err)
				return
			}
			if string(out) != "re:"+string(in) {
				errs <- fmt.Errorf("apply %d: got reply %q", i, out)
			}
		}()
	}
	early.Wait() // answered while the late ones still wait
	close(release)
	late.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deadlines) != n {
		t.Fatalf("leader saw %d deadlines for %d batches", len(deadlines), n)
	}
	for _, d := range deadlines {
		if d <= 0 || d > 5*time.Second {
			t.Fatalf("leader's deadline %v, want within the caller's 5s", d)
		}
	}
	select {
	case <-fs.Done():
		t.Fatal("stream stopped after a clean run")
	default:
	}
}

// The leader's refusals come back as its *APIError with the status and code
// the plain endpoint would use, and leave the stream usable.
func TestForwardStream_ErrorsAndKey(t *testing.T) {
	_, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) {
		if string(batch) == "refuse" {
			return nil, &APIError{Status: 503, Code: CodeNoLeader, Message: "n2 is not the leader"}
		}
		return batch, nil
	})
	_, err := NewPeer(5*time.Second, nil, nil).OpenForwardStream(context.Background(), addr, "wrong")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != CodeForbidden {
		t.Fatalf("open with a wrong cluster key: %v, want a 403 %s", err, CodeForbidden)
	}
	fs := openForward(t, addr, "k1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = fs.Apply(ctx, []byte("refuse"))
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != CodeNoLeader || !strings.Contains(ae.Message, "not the leader") {
		t.Fatalf("refused batch: %v, want a 503 %s", err, CodeNoLeader)
	}
	if out, err := fs.Apply(ctx, []byte("ok")); err != nil || string(out) != "ok" {
		t.Fatalf("after a refusal: %q, %v", out, err)
	}
}

// A stream that breaks fails what it carried as outcome unknown; what is
// asked of it afterwards was not sent (ErrUnavailable, never unknown). A
// server that is closing refuses new streams.
func TestForwardStream_BreakAndClose(t *testing.T) {
	entered := make(chan struct{}, 8)
	release := make(chan struct{})
	s, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return batch, nil
	})
	defer close(release)
	fs := openForward(t, addr, "k1")
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := fs.Apply(ctx, []byte("x"))
			errs <- err
		}()
	}
	for range 3 {
		<-entered
	}
	s.CloseStreams()
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrStreamBroken) {
			t.Fatalf("in flight when the stream broke: %v, want outcome unknown", err)
		}
	}
	<-fs.Done()
	_, err := fs.Apply(context.Background(), []byte("y"))
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("after the break: %v, want unavailable (not sent)", err)
	}
	_, err = NewPeer(2*time.Second, nil, nil).OpenForwardStream(context.Background(), addr, "k1")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("open on a closing server: %v, want unavailable", err)
	}
}

// A leader that answers nothing: the request whose deadline passes with no
// reply at all since it was sent stops the stream, so the next batch
// dials afresh instead of queueing behind a dead connection. A deadline
// passing while replies do arrive leaves the stream alone.
func TestForwardStream_SilentLeaderStopsStream(t *testing.T) {
	hung := make(chan struct{})
	_, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) {
		if string(batch) == "hang" {
			<-hung // deaf to its deadline too: it never answers
		}
		return batch, nil
	})
	t.Cleanup(func() { close(hung) }) // runs before the server is closed
	fs := openForward(t, addr, "k1")

	// A slow request alongside fast ones: its deadline passes, but the
	// stream has been answering, so it stays.
	slow := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := fs.Apply(ctx, []byte("hang"))
		slow <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	var slowErr error
	for slowErr == nil {
		select {
		case slowErr = <-slow:
		default:
			if time.Now().After(deadline) {
				t.Fatal("slow request never ended")
			}
			if _, err := fs.Apply(context.Background(), []byte("fast")); err != nil {
				t.Fatalf("fast request: %v", err)
			}
		}
	}
	if !errors.Is(slowErr, ErrOutcomeUnknown) {
		t.Fatalf("slow request: %v, want outcome unknown", slowErr)
	}
	select {
	case <-fs.Done():
		t.Fatal("stream stopped although replies were arriving")
	default:
	}

	// Alone, the same request stops the stream.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := fs.Apply(ctx, []byte("hang")); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("silent request: %v, want outcome unknown", err)
	}
	select {
	case <-fs.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after a request went unanswered")
	}
}

// A forward stream needs the upgrade; a plain POST to its path is refused.
func TestForwardStream_NeedsUpgrade(t *testing.T) {
	_, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) { return batch, nil })
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+PathInternalForwardStream, strings.NewReader("x"))
	req.Header.Set(HeaderClusterKey, "k1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("POST without upgrade: HTTP %d, want 400", resp.StatusCode)
	}
}

// A leader whose every slot is taken answers a further batch "not
// submitted" at that batch's deadline, before the caller's own, so the
// stream stays.
func TestForwardStream_BusyLeader(t *testing.T) {
	hung := make(chan struct{})
	entered := make(chan struct{}, maxForwardInflight)
	_, addr := newForwardServer(t, func(ctx context.Context, batch []byte) ([]byte, error) {
		if string(batch) == "hang" {
			entered <- struct{}{}
			<-hung
		}
		return batch, nil
	})
	t.Cleanup(func() { close(hung) })
	fs := openForward(t, addr, "k1")
	for range maxForwardInflight {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, _ = fs.Apply(ctx, []byte("hang"))
		}()
	}
	for range maxForwardInflight {
		<-entered
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := fs.Apply(ctx, []byte("small"))
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeUnavailable {
		t.Fatalf("batch behind a full leader: %v, want %s (not submitted)", err, CodeUnavailable)
	}
	select {
	case <-fs.Done():
		t.Fatal("a busy leader's answer stopped the stream")
	default:
	}
}

// A caller whose frame cannot be written before its deadline (a peer that
// accepted the stream and stopped reading) gets an unknown outcome at
// its deadline and the stream stops, instead of blocking on the socket.
func TestForwardStream_StuckWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+forwardProto+"\r\n\r\n")
		<-done // reads nothing more
	}()
	fs := openForward(t, ln.Addr().String(), "k1")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = fs.Apply(ctx, make([]byte, 15<<20))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("stuck write: %v, want outcome unknown", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stuck write returned after %v", took)
	}
	select {
	case <-fs.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after a write outlived its deadline")
	}
}
