package transport

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeIdentity issues a node certificate from the CA and writes the
// three files LoadNodeTLS reads.
func writeIdentity(t *testing.T, dir, name string, caCert, caKey []byte) TLSFiles {
	t.Helper()
	cert, key, err := IssueCert(caCert, caKey, CertNode, name, []string{"127.0.0.1", "localhost"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	for path, data := range map[string][]byte{f.CA: caCert, f.Cert: cert, f.Key: key} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func testCA(t *testing.T) (cert, key []byte) {
	t.Helper()
	cert, key, err := NewCA("unit CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestLoadNodeTLSNamesTheBadSetting(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := testCA(t)
	good := writeIdentity(t, dir, "n1", caCert, caKey)
	other := writeIdentity(t, dir, "n2", caCert, caKey)
	noPEM := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(noPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"no cert", TLSFiles{CA: good.CA, Key: good.Key}, "--tls-cert is required"},
		{"no key", TLSFiles{CA: good.CA, Cert: good.Cert}, "--tls-key is required"},
		{"no CA", TLSFiles{Cert: good.Cert, Key: good.Key}, "--tls-ca is required"},
		{"missing cert file", TLSFiles{CA: good.CA, Cert: good.Cert + ".gone", Key: good.Key}, "--tls-cert:"},
		{"key of another cert", TLSFiles{CA: good.CA, Cert: good.Cert, Key: other.Key}, "--tls-cert " + good.Cert + " with --tls-key " + other.Key},
		{"CA file without a certificate", TLSFiles{CA: noPEM, Cert: good.Cert, Key: good.Key}, "--tls-ca " + noPEM + " holds no PEM certificate"},
	} {
		_, err := LoadNodeTLS(tc.files)
		if !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrTLS naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := LoadNodeTLS(good); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNodeTLS(TLSFiles{CA: good.CA + ".gone", Cert: good.Cert, Key: good.Key}); !errors.Is(err, ErrTLS) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA file: %v, want ErrTLS and fs.ErrNotExist", err)
	}
	// A pair from another CA, and an operator's certificate, are refused
	// at load, not by every peer later.
	otherCert, otherKey := testCA(t)
	foreign := writeIdentity(t, t.TempDir(), "n1", otherCert, otherKey)
	if _, err := LoadNodeTLS(TLSFiles{CA: good.CA, Cert: foreign.Cert, Key: foreign.Key}); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "not usable with --tls-ca") {
		t.Errorf("another CA's node certificate: %v", err)
	}
	opCert, opKey, err := IssueCert(caCert, caKey, CertClient, "op", nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	op := TLSFiles{CA: good.CA, Cert: filepath.Join(dir, "op.crt"), Key: filepath.Join(dir, "op.key")}
	_ = os.WriteFile(op.Cert, opCert, 0o600)
	_ = os.WriteFile(op.Key, opKey, 0o600)
	if _, err := LoadNodeTLS(op); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "not a node certificate") {
		t.Errorf("an operator's certificate as a node's: %v", err)
	}
}

func TestLoadClientTLSPairs(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := testCA(t)
	f := writeIdentity(t, dir, "op", caCert, caKey)
	if _, err := LoadClientTLS(TLSFiles{CA: f.CA, Cert: f.Cert}); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "--tls-cert needs --tls-key") {
		t.Errorf("cert without key: %v", err)
	}
	if _, err := LoadClientTLS(TLSFiles{Key: f.Key}); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "--tls-key needs --tls-cert") {
		t.Errorf("key without cert: %v", err)
	}
	cfg, err := LoadClientTLS(TLSFiles{CA: f.CA})
	if err != nil || cfg.RootCAs == nil || len(cfg.Certificates) != 0 {
		t.Fatalf("CA only: %+v, %v", cfg, err)
	}
	cfg, err = LoadClientTLS(f)
	if err != nil || len(cfg.Certificates) != 1 {
		t.Fatalf("full: %v", err)
	}
}

func TestIssueCertChecksTheCA(t *testing.T) {
	caCert, caKey := testCA(t)
	_, otherKey := testCA(t)
	if _, _, err := IssueCert(caCert, otherKey, CertNode, "n1", []string{"127.0.0.1"}, time.Now(), time.Hour); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("another CA's key: %v", err)
	}
	leaf, leafKey, err := IssueCert(caCert, caKey, CertClient, "op", nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := IssueCert(leaf, leafKey, CertClient, "x", nil, time.Now(), time.Hour); !errors.Is(err, ErrTLS) || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf as CA: %v", err)
	}
	if _, _, err := IssueCert(caCert, caKey, CertNode, "n1", nil, time.Now(), time.Hour); !errors.Is(err, ErrTLS) {
		t.Errorf("node cert without hosts: %v", err)
	}
	cert, _, err := IssueCert(caCert, caKey, CertNode, "n1", []string{"10.0.0.1", "node1.example"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, cert)
	pool := x509.NewCertPool()
	pool.AddCert(parseCert(t, caCert))
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "node1.example", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("node cert for usage %v: %v", usage, err)
		}
	}
	if err := c.VerifyHostname("10.0.0.1"); err != nil {
		t.Errorf("node cert IP: %v", err)
	}
	if err := c.VerifyHostname("10.0.0.2"); err == nil {
		t.Error("node cert verifies for a host it does not name")
	}
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNodeTLSReload: after Reload new handshakes present the new
// certificate; a broken file leaves the last good one in place. The
// dialer verifies the server against the CA and the host it dialed, and
// the listener requires the dialer's certificate.
func TestNodeTLSReload(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := testCA(t)
	f := writeIdentity(t, dir, "n1", caCert, caKey)
	nt, err := LoadNodeTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	ln := raftListener(t, nt, func(c net.Conn) {
		_, _ = c.Write([]byte{1}) // the handshake runs first
	})
	served := func() string {
		t.Helper()
		conn, err := nt.Dial(nil)(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	// Rotate: a new certificate and key in the same files.
	cert, key, err := IssueCert(caCert, caKey, CertNode, "n1", []string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != first {
		t.Fatalf("certificate changed before Reload: %s, was %s", got, first)
	}
	if err := nt.Reload(); err != nil {
		t.Fatal(err)
	}
	second := served()
	if second == first || second != parseCert(t, cert).SerialNumber.String() {
		t.Fatalf("after Reload the server presents %s, want the new %s", second, parseCert(t, cert).SerialNumber)
	}
	if err := os.WriteFile(f.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := nt.Reload(); !errors.Is(err, ErrTLS) {
		t.Fatalf("Reload of a broken key: %v, want ErrTLS", err)
	}
	if got := served(); got != second {
		t.Fatalf("a failed Reload changed the certificate to %s", got)
	}
	// The dialer checks the host: 127.0.0.2 is not in the certificate.
	if conn, err := nt.Dial(nil)(t.Context(), "tcp", strings.Replace(ln.Addr().String(), "127.0.0.1", "127.0.0.2", 1)); err == nil {
		conn.Close()
		t.Fatal("dial to a host the certificate does not name succeeded")
	} else if !isDialError(err) {
		t.Fatalf("failed handshake is not a dial error: %v", err)
	}
}

func TestClientSchemeFollowsTLS(t *testing.T) {
	c, err := NewClient(ClientConfig{Nodes: []string{"127.0.0.1:1"}, TLS: &tls.Config{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes(); len(got) != 1 || got[0] != "https://127.0.0.1:1" {
		t.Fatalf("nodes %v, want https", got)
	}
	c.SetAssigned("n2", "127.0.0.1:2")
	if _, addr := c.Assigned(); addr != "https://127.0.0.1:2" {
		t.Fatalf("assigned %s, want https", addr)
	}
	c.SetAssigned("n3", "http://127.0.0.1:4") // a downgrade: refused
	if id, addr := c.Assigned(); id != "n2" || addr != "https://127.0.0.1:2" {
		t.Fatalf("assigned %s at %s after an http:// assignment, want n2 at https://127.0.0.1:2", id, addr)
	}
	c, err = NewClient(ClientConfig{Nodes: []string{"https://127.0.0.1:1", "127.0.0.1:3"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes(); got[1] != "https://127.0.0.1:3" {
		t.Fatalf("nodes %v: a bare address next to an https one should be https", got)
	}
	c, err = NewClient(ClientConfig{Nodes: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes(); got[0] != "http://127.0.0.1:1" {
		t.Fatalf("nodes %v, want http without TLS", got)
	}
}

// TestRaftListenerBoundsHandshake: a connection to the Raft listener that
// never sends a ClientHello fails its first read after the handshake
// timeout instead of holding its goroutine for good, and a real peer
// still gets through.
func TestRaftListenerBoundsHandshake(t *testing.T) {
	old := raftHandshakeTimeout
	raftHandshakeTimeout = 200 * time.Millisecond
	defer func() { raftHandshakeTimeout = old }()
	caCert, caKey := testCA(t)
	nt, err := LoadNodeTLS(writeIdentity(t, t.TempDir(), "n1", caCert, caKey))
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 2)
	ln := raftListener(t, nt, func(c net.Conn) {
		buf := make([]byte, 1)
		_, err := c.Read(buf)
		if err == nil {
			_, err = c.Write(buf)
		}
		results <- err
	})
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	select {
	case err := <-results:
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("silent peer: %v after %v, want a handshake timeout", err, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a peer that never sends a ClientHello still holds its connection after 5 s")
	}
	peer, err := nt.Dial(nil)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := peer.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != nil {
		t.Fatalf("a real peer after the silent one: %v", err)
	}
	if err := <-results; err != nil {
		t.Fatalf("server side of the real peer: %v", err)
	}
}

// raftListener serves nt's Raft listener on a loopback port until the test
// ends, handing each accepted connection to serve (which it then closes).
func raftListener(t *testing.T, nt *NodeTLS, serve func(net.Conn)) net.Listener {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := nt.Listener(raw, true)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln
}
