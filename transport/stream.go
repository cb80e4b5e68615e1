package transport

import (
	"context"
	"errors"
	"net"
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
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer wraps ln. advertise is the address peers dial (ln's
// address when empty); dial defaults to a plain net.Dialer.
func NewStreamLayer(ln net.Listener, advertise string, dial DialFunc) (*StreamLayer, error) {
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			return nil, errors.Join(ErrAdvertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return nil, errors.Join(ErrAdvertise, errors.New("advertise address must name a host, not "+advertise))
		}
		adv = a
	}
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	return &StreamLayer{ln: ln, advertise: adv, dial: dial}, nil
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
	return conn, nil
}

// Accept implements net.Listener.
func (s *StreamLayer) Accept() (net.Conn, error) { return s.ln.Accept() }

// Close implements net.Listener.
func (s *StreamLayer) Close() error { return s.ln.Close() }

// Addr implements net.Listener; it is the address advertised to peers.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }
