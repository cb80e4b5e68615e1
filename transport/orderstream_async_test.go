package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
)

// asyncBackend answers order-stream commands through ApplyAsync: it
// keeps each command's done callback until the test calls them all from
// one goroutine, as the node calls a batch's callbacks from the goroutine
// that waited for its Raft entry. Only the Backend methods the order
// stream uses are implemented.
type asyncBackend struct {
	Backend // nil: any other method panics
	mu      sync.Mutex
	waiting []func()
	applied int
}

func (b *asyncBackend) Authenticate(context.Context, string) (Principal, error) {
	return Principal{AccountID: 1}, nil
}
func (b *asyncBackend) CountRequest()      {}
func (b *asyncBackend) LeaderHTTP() string { return "" }

func (b *asyncBackend) ApplyAsync(_ context.Context, cmd *fsm.Command, done func(*fsm.Result, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applied++
	b.waiting = append(b.waiting, func() {
		done(&fsm.Result{Code: fsm.CodeUnknownOrder, Message: "unknown order 1"}, nil)
	})
}

// take returns the callbacks waiting and how many commands came in all.
func (b *asyncBackend) take() ([]func(), int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.waiting
	b.waiting = nil
	return w, b.applied
}

// gate holds up writes to a connection while it is shut, as a full
// socket would for a peer that stopped reading (shrinking real socket
// buffers on loopback makes the kernel drop segments and back off for
// seconds instead).
type gate struct {
	mu   sync.Mutex
	shut bool
	open chan struct{}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.shut, g.open = true, make(chan struct{})
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.shut = false
		close(g.open)
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	shut, open := g.shut, g.open
	g.mu.Unlock()
	if shut {
		<-open
	}
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c gatedConn) Write(b []byte) (int, error) {
	c.g.wait()
	return c.Conn.Write(b)
}

type gatedListener struct {
	net.Listener
	g *gate
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return gatedConn{c, l.g}, nil
}

// A client that stops reading its acknowledgements stalls its own stream
// only: the goroutine that delivers a batch's results (here the test's)
// never blocks on that stream, however many requests the client sent;
// the stream stops taking requests instead, and once the client reads
// again every request is answered exactly once.
func TestOrderStreamStalledReaderNeverBlocksResults(t *testing.T) {
	bothWays(t, stalledReader)
}

// openRawStream opens a binary order stream at url by hand, taken over
// from HTTP (upgrade) or as a full-duplex HTTP exchange, and returns where
// its requests go, where its replies come from, and how to end its
// requests.
func openRawStream(t *testing.T, url string, upgrade bool) (w io.Writer, replies io.Reader, end func()) {
	t.Helper()
	if upgrade {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/orders/stream", nil)
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set("Content-Type", StreamContentBinary)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", orderProto)
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, req)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		return conn, br, func() { _, _ = conn.Write(appendBlock(nil, nil)) }
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/orders/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Content-Type", StreamContentBinary)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return pw, resp.Body, func() { pw.Close() }
}

func stalledReader(t *testing.T, upgrade bool) {
	const requests = 4 * maxStreamInflight
	be := &asyncBackend{}
	g := &gate{}
	srv := httptest.NewUnstartedServer(NewServer(be, nil))
	srv.Listener = gatedListener{srv.Listener, g}
	srv.Start()
	defer srv.Close()

	w, replies, end := openRawStream(t, srv.URL, upgrade)
	defer g.release()
	g.close()   // the stream is open: from here its replies back up
	go func() { // every request at once: cancels of order 1, tagged 0, 1, ...
		defer end()
		for i := range requests {
			body, _ := appendStreamRequest(nil, &StreamRequest{Tag: strconv.Itoa(i), Op: "cancel", OrderID: 1})
			if _, err := w.Write(appendBlock(nil, body)); err != nil {
				return
			}
		}
	}()

	// deliver calls the waiting callbacks from one goroutine, which must
	// not block on the stream.
	deliver := func() int {
		t.Helper()
		cbs, applied := be.take()
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			for _, cb := range cbs {
				cb()
			}
		}()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatalf("delivering %d results blocked on a stream whose client is not reading", len(cbs))
		}
		return applied
	}
	// Phase 1: nobody reads. The stream takes requests until its replies
	// back up, then stops; it never takes all of them.
	deadline := time.Now().Add(20 * time.Second)
	last, quietSince := -1, time.Now()
	for time.Since(quietSince) < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("the stream kept taking requests from a client that reads nothing")
		}
		if n := deliver(); n != last {
			last, quietSince = n, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	if last >= requests {
		t.Fatalf("the stream took all %d requests while its client read nothing", requests)
	}
	t.Logf("stalled after taking %d of %d requests", last, requests)

	// Phase 2: the replies flow again; every request is answered once.
	g.release()
	deadline = time.Now().Add(60 * time.Second)
	answers := make(chan string, requests)
	go func() {
		br := bufio.NewReader(replies)
		for {
			n, err := binary.ReadUvarint(br)
			if err != nil {
				close(answers)
				return
			}
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				close(answers)
				return
			}
			rep, err := decodeStreamReply(body)
			if err != nil || rep.Status != 404 {
				t.Errorf("reply %+v: %v", rep, err)
			}
			answers <- rep.Tag
		}
	}()
	seen := map[string]bool{}
	for len(seen) < requests {
		if time.Now().After(deadline) {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("%d of %d requests answered", len(seen), requests)
		}
		deliver()
		for drained := false; !drained; {
			select {
			case tag, ok := <-answers:
				if !ok {
					if len(seen) < requests {
						t.Fatalf("stream ended after %d answers", len(seen))
					}
					drained = true
					continue
				}
				if seen[tag] {
					t.Fatalf("request %s answered twice", tag)
				}
				seen[tag] = true
			case <-time.After(5 * time.Millisecond):
				drained = true
			}
		}
	}
}
