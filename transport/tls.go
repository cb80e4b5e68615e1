package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ErrTLS reports TLS settings that cannot be used: a file that is missing
// or unreadable, a key that does not match its certificate, a CA file
// without a certificate, or half of a pair given without the other.
var ErrTLS = errors.New("bad TLS settings")

// TLSFiles names the PEM files of a TLS identity and the CA it trusts.
type TLSFiles struct {
	CA   string // CA certificate(s) that sign the cluster's certificates
	Cert string // this party's certificate (a chain is fine)
	Key  string // its private key
	CRL  string // optional: the CA's revocation list (crl.go), nodes only
}

// NodeTLS is a node's TLS setup: one certificate and one CA, used as a
// server (the API and Raft) and as a client (Raft dials and calls to the
// other nodes' APIs). Every handshake reads the current certificate and
// CA, so Reload takes effect for new connections without a restart.
type NodeTLS struct {
	files TLSFiles
	cur   atomic.Pointer[tlsMaterial]
}

type tlsMaterial struct {
	cert    tls.Certificate
	pool    *x509.CertPool
	revoked revocations
}

// LoadNodeTLS reads a node's certificate, key and CA; all three are
// required (the CA both verifies peers and is what they verify).
func LoadNodeTLS(f TLSFiles) (*NodeTLS, error) {
	for _, p := range []struct{ flag, path string }{{"--tls-cert", f.Cert}, {"--tls-key", f.Key}, {"--tls-ca", f.CA}} {
		if p.path == "" {
			return nil, fmt.Errorf("%w: %s is required with TLS (give --tls-cert, --tls-key and --tls-ca together)", ErrTLS, p.flag)
		}
	}
	t := &NodeTLS{files: f}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// ErrOwnCertRevoked: the node's own certificate is on its revocation
// list. At start that is fatal; on Reload the new list is in force all
// the same (a node must not go on admitting what it lists because its
// own certificate is among them), and peers holding it refuse the node.
var ErrOwnCertRevoked = fmt.Errorf("%w: this node's own certificate is revoked", ErrTLS)

// Reload reads the files again. On an error the old material stays,
// except for ErrOwnCertRevoked, which reports a new list now in force.
func (t *NodeTLS) Reload() error {
	cert, err := loadKeyPair(t.files.Cert, t.files.Key)
	if err != nil {
		return err
	}
	pool, cas, err := loadCA(t.files.CA)
	if err != nil {
		return err
	}
	if err := verifyNodeCert(cert, pool); err != nil {
		return fmt.Errorf("%w: --tls-cert %s: %w", ErrTLS, t.files.Cert, err)
	}
	m := &tlsMaterial{cert: cert, pool: pool}
	if t.files.CRL != "" {
		if m.revoked, err = loadCRL(t.files.CRL, cas); err != nil {
			return err
		}
		if leaf, _ := x509.ParseCertificate(cert.Certificate[0]); m.revoked.has(leaf) {
			t.cur.Store(m)
			return fmt.Errorf("%w: --tls-cert %s is on --tls-crl %s", ErrOwnCertRevoked, t.files.Cert, t.files.CRL)
		}
	}
	t.cur.Store(m)
	return nil
}

// Revoked reports whether c is on the revocation list the node holds now
// (the admin endpoints check it per request, so a connection set up
// before the list was loaded gets no further).
func (t *NodeTLS) Revoked(c *x509.Certificate) bool {
	return t.cur.Load().revoked.has(c)
}

// refuseRevoked fails a handshake whose peer presents a revoked
// certificate; a peer without one is left to the ClientAuth setting.
func (m *tlsMaterial) refuseRevoked(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) > 0 && m.revoked.has(cs.PeerCertificates[0]) {
		return fmt.Errorf("hats: certificate %q (serial %s) is revoked", cs.PeerCertificates[0].Subject.CommonName, SerialHex(cs.PeerCertificates[0].SerialNumber))
	}
	return nil
}

// verifyNodeCert checks that a node's own certificate chains to its CA
// (with any intermediates it carries) and can serve as a node: a
// misconfigured pair is caught at start or reload, not by every peer.
func verifyNodeCert(cert tls.Certificate, pool *x509.CertPool) error {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("not usable with --tls-ca: %w", err)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil || !IsNodeCert(leaf) {
			return errors.New("not a node certificate (a node serves and dials, so it needs both the server and the client auth usage; hats cert node makes one)")
		}
	}
	return nil
}

// IsNodeCert reports whether a certificate the CA signed is a node's
// rather than an operator's: only node certificates may serve, so only
// they carry the server auth usage. Raft and the internal endpoints
// accept nothing else.
func IsNodeCert(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth {
			return true
		}
	}
	return false
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: --tls-cert: %w", ErrTLS, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: --tls-key: %w", ErrTLS, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: --tls-cert %s with --tls-key %s: %v", ErrTLS, certFile, keyFile, err)
	}
	return cert, nil
}

// loadCA reads the CA file: its certificates, as a pool and one by one.
func loadCA(file string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --tls-ca: %w", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); b.Type == "CERTIFICATE" && err == nil {
			pool.AddCert(c)
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("%w: --tls-ca %s holds no PEM certificate", ErrTLS, file)
	}
	return pool, certs, nil
}

// serverConfig answers handshakes with the current certificate. With
// requireClient every client must present a node certificate the CA
// signed (Raft); without it one is verified when given (the API, whose
// admin and internal endpoints then check for it, clientCert in
// server.go).
func (t *NodeTLS) serverConfig(requireClient bool) *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if requireClient {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}, // order streams upgrade, and stay full duplex, on HTTP/1.1
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.cur.Load()
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   []string{"http/1.1"},
				Certificates: []tls.Certificate{m.cert},
				ClientCAs:    m.pool,
				ClientAuth:   auth,
			}
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := m.refuseRevoked(cs); err != nil {
					return err
				}
				if requireClient {
					return requireNodePeer(cs)
				}
				return nil
			}
			return cfg, nil
		},
	}
}

// requireNodePeer refuses a verified client whose certificate is not a
// node's (an operator's client certificate from the same CA).
func requireNodePeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 || !IsNodeCert(cs.PeerCertificates[0]) {
		return errors.New("hats: Raft peers must present a node certificate")
	}
	return nil
}

// Listener wraps ln so that what it accepts speaks TLS (the handshake
// happens on the connection's first read or write, not in Accept). With
// requireClient (Raft) that handshake must finish within
// raftHandshakeTimeout: Raft reads its connections with no deadline, so a
// peer that connects and never completes a handshake would otherwise hold
// a goroutine for good. (The API's http.Server bounds its own.)
func (t *NodeTLS) Listener(ln net.Listener, requireClient bool) net.Listener {
	tl := tls.NewListener(ln, t.serverConfig(requireClient))
	if !requireClient {
		return tl
	}
	return handshakeListener{tl}
}

// raftHandshakeTimeout bounds a Raft connection's TLS handshake (a
// variable for tests).
var raftHandshakeTimeout = 10 * time.Second

type handshakeListener struct{ net.Listener }

func (l handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &boundedHandshake{Conn: c.(*tls.Conn)}, nil
}

// boundedHandshake runs the server handshake on first use and closes the
// connection if it has not finished within raftHandshakeTimeout. It sets
// no deadline itself, so the one the stream layer puts on a connection's
// first bytes (stream.go) still holds after the handshake.
type boundedHandshake struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *boundedHandshake) handshake() error {
	c.once.Do(func() {
		t := time.AfterFunc(raftHandshakeTimeout, func() { _ = c.Conn.NetConn().Close() })
		c.err = c.Conn.Handshake()
		if !t.Stop() && c.err == nil {
			c.err = errors.New("hats: TLS handshake timed out")
		}
	})
	return c.err
}

func (c *boundedHandshake) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *boundedHandshake) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// clientConfig verifies the server at serverName (a host name or an IP
// literal, checked against the certificate's names) and presents this
// node's certificate.
func (t *NodeTLS) clientConfig(serverName string) *tls.Config {
	m := t.cur.Load()
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		ServerName:       serverName,
		RootCAs:          m.pool,
		Certificates:     []tls.Certificate{m.cert},
		VerifyConnection: m.refuseRevoked,
	}
}

// Dial returns a dialer that dials with dial (a plain net.Dialer when nil)
// and completes a TLS handshake, verifying that the peer's certificate
// names the host dialed.
func (t *NodeTLS) Dial(dial DialFunc) DialFunc {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, t.clientConfig(host))
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, &net.OpError{Op: "dial", Net: network, Addr: raw.RemoteAddr(), Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		return conn, nil
	}
}

// LoadClientTLS builds the TLS settings of a client program: f.CA is the
// CA that signed the nodes' certificates (empty: the system's roots);
// f.Cert and f.Key, given together, are a client certificate, which the
// admin endpoints (join, remove, leadership transfer) require when the
// cluster runs TLS.
func LoadClientTLS(f TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, _, err := loadCA(f.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.Cert != "" && f.Key != "":
		cert, err := loadKeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.Cert != "":
		return nil, fmt.Errorf("%w: --tls-cert needs --tls-key", ErrTLS)
	case f.Key != "":
		return nil, fmt.Errorf("%w: --tls-key needs --tls-cert", ErrTLS)
	}
	return cfg, nil
}
