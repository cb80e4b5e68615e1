package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The forward stream: a follower's persistent connection to the leader for
// the batches of commands it forwards (PathInternalApplyMany's body and
// reply, unchanged). One plain HTTP request per batch costs two processes
// a request parse, a response and several goroutine hand-offs each; on
// this path they are a visible part of a follower client's round trip.
// The stream is opened with an HTTP/1.1 upgrade that carries the cluster
// key, and then carries length-prefixed binary frames both ways:
//
//	request: uvarint tag | uvarint timeout (µs; 0: none, capped at a minute) | uvarint length | batch
//	reply:   uvarint tag | kind byte | uvarint length | payload
//
// A reply's kind is fwdFrameReply (the payload is the backend's reply) or
// fwdFrameError (the payload is the HTTP status the plain endpoint would
// have answered, as a uvarint, then its ErrorBody as JSON).
// Batches on one stream are applied concurrently and answered in
// completion order, so the leader's group commit can pack them together.
const (
	PathInternalForwardStream = "/v1/internal/forward-stream"
	forwardProto              = "hats-forward/1"

	fwdFrameReply byte = 0
	fwdFrameError byte = 1

	maxForwardInflight = 64               // batches in flight per stream, on the leader
	maxForwardTimeout  = time.Minute      // cap on a request's timeout field
	maxForwardReply    = maxResponseBytes // cap on a reply frame
	forwardWriteLimit  = 10 * time.Second // a leader's reply frame must be written within this
)

// ErrStreamBroken reports a forward stream that has stopped: requests sent
// on it before it stopped have unknown outcomes (they wrap
// ErrOutcomeUnknown); requests made after it has stopped were not sent
// (they wrap ErrUnavailable).
var ErrStreamBroken = errors.New("forward stream broken")

// forwardStream serves the leader's side of a forward stream.
func (s *Server) forwardStream(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), forwardProto) {
		writeError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "forward stream: Upgrade must be " + forwardProto})
		return
	}
	conn, brw, release := s.takeOver(w, "forward stream", forwardProto, "")
	if conn == nil {
		return
	}
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wmu sync.Mutex
		wg  sync.WaitGroup
	)
	defer func() {
		cancel()
		wg.Wait()
	}()
	write := func(tag uint64, kind byte, payload []byte) {
		if kind == fwdFrameReply && len(payload) > maxForwardReply {
			// The follower would drop the stream over it; this batch's
			// commands were submitted, so their fate is unknown.
			kind, payload = fwdFrameError, errorPayload(&APIError{Status: 503, Code: CodeOutcomeUnknown,
				Message: fmt.Sprintf("forwarded batch's reply of %d bytes exceeds %d", len(payload), maxForwardReply)})
		}
		b := appendBlock(append(binary.AppendUvarint(nil, tag), kind), payload)
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(forwardWriteLimit))
		if _, err := conn.Write(b); err != nil {
			_ = conn.Close() // ends the read loop below
		}
	}
	sem := make(chan struct{}, maxForwardInflight)
	br := brw.Reader
	for {
		tag, tmo, batch, err := readForwardRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("forward stream ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		// The batch's deadline counts from its arrival, also while it
		// waits for a slot: one that never got one was never submitted.
		bctx, bcancel := context.WithTimeout(ctx, tmo)
		select {
		case sem <- struct{}{}:
		case <-bctx.Done():
			bcancel()
			write(tag, fwdFrameError, errorPayload(&APIError{Status: 503, Code: CodeUnavailable,
				Message: "forwarded batch not submitted: the leader was busy until its deadline"}))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer bcancel()
			out, err := s.b.ApplyForwardedBatch(bctx, batch)
			if err != nil {
				write(tag, fwdFrameError, errorPayload(toAPIError(err)))
				return
			}
			write(tag, fwdFrameReply, out)
		}()
	}
}

// errFrame reports a frame of a binary stream (forward or order stream)
// that cannot be read.
var errFrame = errors.New("malformed frame")

// errorPayload is a fwdFrameError payload: the status, then the JSON
// error body.
func errorPayload(ae *APIError) []byte {
	body, _ := json.Marshal(ErrorBody{Error: *ae})
	return append(binary.AppendUvarint(nil, uint64(ae.Status)), body...)
}

func readForwardRequest(br *bufio.Reader) (tag uint64, tmo time.Duration, batch []byte, err error) {
	if tag, err = binary.ReadUvarint(br); err != nil {
		return
	}
	us, err := binary.ReadUvarint(br)
	if err != nil {
		return
	}
	// 0 (no deadline) or more than the cap: the cap.
	tmo = maxForwardTimeout
	if us > 0 && us < uint64(maxForwardTimeout/time.Microsecond) {
		tmo = time.Duration(us) * time.Microsecond
	}
	batch, err = readBlock(br, MaxForwardedBatchBody)
	return
}

// appendBlock appends p with its length in front (a uvarint), the tail
// of every frame.
func appendBlock(b, p []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(p))), p...)
}

// readBlock reads what appendBlock wrote, refusing more than limit bytes.
func readBlock(br *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", errFrame, n, limit)
	}
	p := make([]byte, n)
	if _, err = io.ReadFull(br, p); errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF // the length was read: the body is cut short
	}
	return p, err
}

// takeOver takes an upgrade request's connection from net/http (what
// names the stream in an error), tracks it for CloseStreams and answers
// 101 Switching Protocols to proto, with extra header lines ("Name:
// value\r\n" each) after the Upgrade header. A nil conn means there is
// nothing more to do: an error was answered, the server is closing or the
// client is gone. Otherwise release untracks and closes the connection.
func (s *Server) takeOver(w http.ResponseWriter, what, proto, extra string) (conn net.Conn, brw *bufio.ReadWriter, release func()) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, &APIError{Status: 500, Code: CodeInternal, Message: what + ": " + err.Error()})
		return nil, nil, nil
	}
	if !s.trackConn(conn) { // the server is shutting down
		conn.Close()
		return nil, nil, nil
	}
	release = func() {
		// Close gently: with requests still unread (a stream ended
		// on a malformed frame) a plain close resets the connection,
		// and the peer may lose replies already sent. Half-close,
		// then let the peer's own close (bounded) come first.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(lingerLimit))
			_, _ = io.Copy(io.Discard, io.LimitReader(conn, lingerBytes))
		}
		s.untrackConn(conn)
		conn.Close()
	}
	_ = conn.SetDeadline(time.Time{})
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + proto + "\r\n" + extra + "\r\n")
	if brw.Flush() != nil {
		release()
		return nil, nil, nil
	}
	return conn, brw, release
}

// A taken-over connection's close waits at most this long, and reads at
// most this much, for the peer to close its end (takeOver).
const (
	lingerLimit = 500 * time.Millisecond
	lingerBytes = 1 << 20
)

// trackConn records a hijacked connection so CloseStreams can end it; it
// reports false once the server is closing.
func (s *Server) trackConn(c net.Conn) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closing {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrackConn(c net.Conn) {
	s.connMu.Lock()
	delete(s.conns, c)
	s.connMu.Unlock()
}

// CloseStreams closes every forward stream and upgraded order stream this
// server has accepted and refuses new ones. http.Server does not track hijacked connections:
// NewHTTPServer registers this to run on Shutdown; call it after
// http.Server.Close.
func (s *Server) CloseStreams() {
	s.connMu.Lock()
	s.closing = true
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// ForwardStream is a follower's side of a forward stream to one leader.
// Apply is safe for concurrent use; each call waits only for its own
// reply.
type ForwardStream struct {
	addr string
	conn io.ReadWriteCloser

	wmu sync.Mutex // serialises frame writes

	mu       sync.Mutex
	next     uint64
	waiting  map[uint64]chan forwardReply
	err      error         // why the stream stopped; set once
	done     chan struct{} // closed when the stream has stopped
	received atomic.Uint64 // replies read so far
}

type forwardReply struct {
	kind    byte
	payload []byte
}

// OpenForwardStream opens a forward stream to the leader at addr. An error
// means nothing was sent: it wraps ErrUnavailable, or is the node's
// *APIError refusing the stream (a wrong cluster key; 404 from a node
// without forward streams). A node that no longer leads still accepts the
// stream and answers each batch no_leader.
func (p *Peer) OpenForwardStream(ctx context.Context, addr, clusterKey string) (*ForwardStream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.scheme+"://"+addr+PathInternalForwardStream, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", forwardProto)
	req.Header.Set(HeaderClusterKey, clusterKey)
	// Not p.hc: its Timeout would end the stream after one request's
	// time. The transport's dial and response-header timeouts bound the
	// open; ctx bounds it too.
	resp, err := p.stream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: opening forward stream to %s: %v", ErrUnavailable, addr, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		resp.Body.Close()
		return nil, parseAPIError(resp.StatusCode, data)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: forward stream to %s: upgraded body is not writable", ErrUnavailable, addr)
	}
	fs := &ForwardStream{addr: addr, conn: rwc, waiting: map[uint64]chan forwardReply{}, done: make(chan struct{})}
	go fs.read()
	return fs, nil
}

// Addr is the leader address the stream is connected to.
func (fs *ForwardStream) Addr() string { return fs.addr }

// Done is closed once the stream has stopped.
func (fs *ForwardStream) Done() <-chan struct{} { return fs.done }

// Close stops the stream; requests still waiting fail with an unknown
// outcome.
func (fs *ForwardStream) Close() error {
	fs.stop(errors.New("closed"))
	return nil
}

// stop records why the stream stopped (the first reason wins), closes the
// connection and fails every request still waiting.
func (fs *ForwardStream) stop(why error) {
	fs.mu.Lock()
	if fs.err != nil {
		fs.mu.Unlock()
		return
	}
	fs.err = why
	waiting := fs.waiting
	fs.waiting = nil
	close(fs.done)
	fs.mu.Unlock()
	_ = fs.conn.Close()
	for _, ch := range waiting {
		close(ch)
	}
}

func (fs *ForwardStream) read() {
	br := bufio.NewReaderSize(fs.conn, 64<<10)
	for {
		tag, err := binary.ReadUvarint(br)
		if err != nil {
			fs.stop(err)
			return
		}
		kind, err := br.ReadByte()
		if err == nil && kind != fwdFrameReply && kind != fwdFrameError {
			err = fmt.Errorf("%w: reply kind %d", errFrame, kind)
		}
		if err != nil {
			fs.stop(err)
			return
		}
		payload, err := readBlock(br, maxForwardReply)
		if err != nil {
			fs.stop(err)
			return
		}
		fs.received.Add(1)
		fs.mu.Lock()
		ch := fs.waiting[tag]
		delete(fs.waiting, tag)
		fs.mu.Unlock()
		if ch != nil {
			ch <- forwardReply{kind: kind, payload: payload}
		}
	}
}

// Apply sends one batch (fsm.EncodeBatch) and waits for the leader's
// reply, exactly as Peer.ForwardApplyBatch does over plain HTTP: an error
// wrapping ErrUnavailable (without an *APIError) means the batch was not
// sent; an *APIError is the leader's answer; an error wrapping
// ErrOutcomeUnknown means any command in it may have been applied.
//
// A request whose deadline passes while nothing at all has come back on the
// stream since it was sent stops the stream: a connection that answers
// nothing is treated as dead, and the next batch opens a new one.
func (fs *ForwardStream) Apply(ctx context.Context, batch []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: before forwarding: %v", ErrUnavailable, err)
	}
	if len(batch) > MaxForwardedBatchBody {
		return nil, &APIError{Status: 413, Code: CodeBodyTooLarge, Message: fmt.Sprintf("forwarded batch larger than %d bytes", MaxForwardedBatchBody)}
	}
	// The leader gets a little less time than the caller has, so that its
	// answer (even "outcome unknown" at its deadline) arrives before the
	// caller gives up on a stream that is merely slow.
	var tmo time.Duration
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, fmt.Errorf("%w: deadline passed before forwarding", ErrUnavailable)
		}
		tmo = max(left-min(left/8, 250*time.Millisecond), time.Microsecond)
	}
	ch := make(chan forwardReply, 1)
	fs.mu.Lock()
	if fs.err != nil {
		err := fs.err
		fs.mu.Unlock()
		return nil, fmt.Errorf("%w: %w to %s: %v", ErrUnavailable, ErrStreamBroken, fs.addr, err)
	}
	fs.next++
	tag := fs.next
	fs.waiting[tag] = ch
	fs.mu.Unlock()

	frame := appendBlock(binary.AppendUvarint(binary.AppendUvarint(nil, tag), uint64(tmo/time.Microsecond)), batch)
	seen := fs.received.Load()
	// A write that outlives the caller's deadline (a leader that stopped
	// reading) stops the stream: with part of a frame written it is of
	// no further use, and the writes queued behind this one are freed.
	unstuck := context.AfterFunc(ctx, func() { fs.stop(fmt.Errorf("write to %s outlived a deadline", fs.addr)) })
	fs.wmu.Lock()
	_, err := fs.conn.Write(frame)
	fs.wmu.Unlock()
	unstuck()
	if err != nil {
		fs.stop(err)
		return nil, fmt.Errorf("%w: %w: writing to %s: %v", ErrOutcomeUnknown, ErrStreamBroken, fs.addr, err)
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %w: %s: %v", ErrOutcomeUnknown, ErrStreamBroken, fs.addr, fs.stopErr())
		}
		if rep.kind == fwdFrameError {
			status, k := binary.Uvarint(rep.payload)
			if k <= 0 {
				return nil, fmt.Errorf("%w: malformed error reply from %s", ErrOutcomeUnknown, fs.addr)
			}
			return nil, parseAPIError(int(status), rep.payload[k:])
		}
		return rep.payload, nil
	case <-ctx.Done():
		fs.mu.Lock()
		delete(fs.waiting, tag)
		fs.mu.Unlock()
		select {
		case rep, ok := <-ch: // answered at the same moment
			if ok && rep.kind == fwdFrameReply {
				return rep.payload, nil
			}
		default:
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && fs.received.Load() == seen {
			fs.stop(fmt.Errorf("no reply from %s before a deadline", fs.addr))
		}
		return nil, fmt.Errorf("%w: waiting for %s: %v", ErrOutcomeUnknown, fs.addr, ctx.Err())
	}
}

func (fs *ForwardStream) stopErr() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.err
}
