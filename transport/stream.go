package transport

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// ErrAdvertise reports a Raft address other nodes could not dial.
var ErrAdvertise = errors.New("bad advertise address")

// DialFunc dials a peer; tests replace it to inject network faults.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// StreamLayer is a raft.StreamLayer over TCP. Dial can be replaced to route
// through a fault-injecting network in tests.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	dial      DialFunc

	mu    sync.Mutex
	conns map[*trackedConn]struct{} // every open connection, for CloseAll
}

// trackedConn removes itself from its layer's set when closed.
type trackedConn struct {
	net.Conn
	s    *StreamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func (s *StreamLayer) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
	return tc
}

// CloseAll closes every connection the layer has dialed or accepted. A
// shutdown uses it to unblock Raft goroutines stuck on a peer that stopped
// answering (a partition), so stopping a node is bounded in time.
func (s *StreamLayer) CloseAll() {
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer wraps ln. advertise is the address peers dial (ln's
// address when empty); dial defaults to a plain net.Dialer.
func NewStreamLayer(ln net.Listener, advertise string, dial DialFunc) (*StreamLayer, error) {
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := resolveAdvertise(advertise)
		if err != nil {
			return nil, err
		}
		adv = a
	}
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	return &StreamLayer{ln: ln, advertise: adv, dial: dial, conns: map[*trackedConn]struct{}{}}, nil
}

// AdvertiseAddr is the Raft address a node advertising addr puts in the
// cluster configuration (its stream layer's address): the resolved
// HOST:PORT, never an unspecified host.
func AdvertiseAddr(addr string) (string, error) {
	a, err := resolveAdvertise(addr)
	if err != nil {
		return "", err
	}
	return a.String(), nil
}

func resolveAdvertise(addr string) (*net.TCPAddr, error) {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, errors.Join(ErrAdvertise, err)
	}
	if a.IP == nil || a.IP.IsUnspecified() {
		return nil, errors.Join(ErrAdvertise, errors.New("advertise address must name a host, not "+addr))
	}
	return a, nil
}

// Dial implements raft.StreamLayer.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := s.dial(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return s.track(conn), nil
}

// firstRPCTimeout bounds how long an accepted Raft connection may stay
// silent before its first byte (a variable for tests). hashicorp/raft
// dials a connection only to send an RPC on it, so a peer's first byte
// follows at once; without a bound, a connection that never sends (a
// port scanner, a half-open client) would hold a transport goroutine for
// good, since Raft reads its connections with no deadline. Later reads
// keep having none: pooled connections rightly sit idle between RPCs.
// (Over TLS the handshake is bounded as well, by the listener.)
var firstRPCTimeout = 10 * time.Second

// Accept implements net.Listener.
func (s *StreamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(time.Now().Add(firstRPCTimeout)); err != nil {
		c.Close()
		return nil, err
	}
	return s.track(&firstReadConn{Conn: c}), nil
}

// firstReadConn clears the read deadline Accept set once the first bytes
// arrive.
type firstReadConn struct {
	net.Conn
	started atomic.Bool
}

func (c *firstReadConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.started.Load() {
		c.started.Store(true)
		if derr := c.Conn.SetReadDeadline(time.Time{}); err == nil {
			err = derr
		}
	}
	return n, err
}

// Close implements net.Listener.
func (s *StreamLayer) Close() error { return s.ln.Close() }

// Addr implements net.Listener; it is the address advertised to peers.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }
