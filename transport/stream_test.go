package transport

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestStreamLayerBoundsSilentConnections: an accepted Raft connection
// that sends nothing fails its first read after firstRPCTimeout instead
// of holding its goroutine for good, while one that has sent its first
// RPC may then sit idle past that bound (a pooled connection) and still
// be read.
func TestStreamLayerBoundsSilentConnections(t *testing.T) {
	old := firstRPCTimeout
	firstRPCTimeout = 200 * time.Millisecond
	defer func() { firstRPCTimeout = old }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStreamLayer(ln, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	accept := func() net.Conn {
		t.Helper()
		c, err := s.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	dial() // never sends
	silent := accept()
	start := time.Now()
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read from a silent connection: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the silent connection was cut after %v", d)
	}

	peer := dial()
	conn := accept()
	buf := make([]byte, 1)
	for i, wait := range []time.Duration{0, 3 * firstRPCTimeout} {
		go func() {
			time.Sleep(wait) // idle between RPCs, past the first-byte bound
			_, _ = peer.Write([]byte{byte(i + 1)})
		}()
		if _, err := conn.Read(buf); err != nil || buf[0] != byte(i+1) {
			t.Fatalf("read %d from a live connection: %v (%d)", i, err, buf[0])
		}
	}
}

// TestStreamLayerBoundsSilentTLSConnections: over TLS too, a peer that
// completes the handshake with a valid node certificate and then sends
// nothing is cut after firstRPCTimeout (the handshake's own bound must
// not clear the stream layer's).
func TestStreamLayerBoundsSilentTLSConnections(t *testing.T) {
	old := firstRPCTimeout
	firstRPCTimeout = 300 * time.Millisecond
	defer func() { firstRPCTimeout = old }()
	caCert, caKey := testCA(t)
	nt, err := LoadNodeTLS(writeIdentity(t, t.TempDir(), "n1", caCert, caKey))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStreamLayer(nt.Listener(raw, true), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dialed := make(chan error, 1)
	go func() { // the client's handshake completes inside the server's first Read
		peer, err := nt.Dial(nil)(t.Context(), "tcp", raw.Addr().String())
		if err == nil {
			t.Cleanup(func() { peer.Close() })
		}
		dialed <- err
	}()
	conn, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read from a silent TLS peer: %v, want a deadline error", err)
	}
	if err := <-dialed; err != nil {
		t.Fatalf("the peer's handshake: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the silent TLS peer was cut after %v", d)
	}
}
