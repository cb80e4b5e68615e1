package transport

import (
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRevocationList: a node with --tls-crl refuses a revoked peer on Raft
// (as server) and a revoked server (as dialer), keeps serving the others,
// picks up a new list on Reload, keeps the old list when the new file is
// bad or signed by another CA, and refuses to load with its own
// certificate revoked. Revoke extends a list without losing entries.
func TestRevocationList(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := testCA(t)
	f := writeIdentity(t, dir, "n1", caCert, caKey)
	f.CRL = filepath.Join(dir, "ca.crl")
	writeCRL := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(f.CRL, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	empty, added, total, err := Revoke(caCert, caKey, nil, nil, time.Now(), time.Hour)
	if err != nil || added != 0 || total != 0 {
		t.Fatalf("an empty list: %d added, %d total, %v", added, total, err)
	}
	writeCRL(empty)
	server, err := LoadNodeTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	ln := raftListener(t, server, func(c net.Conn) {
		_, _ = c.Write([]byte{1}) // the handshake runs first
	})
	// Two peers of the same CA; n3 gets revoked.
	peer := func(name string) (*NodeTLS, *big.Int) {
		t.Helper()
		pf := writeIdentity(t, t.TempDir(), name, caCert, caKey)
		nt, err := LoadNodeTLS(pf)
		if err != nil {
			t.Fatal(err)
		}
		return nt, tlsLeaf(t, nt).SerialNumber
	}
	n2, n2Serial := peer("n2")
	n3, n3Serial := peer("n3")
	connects := func(nt *NodeTLS) error {
		t.Helper()
		conn, err := nt.Dial(nil)(t.Context(), "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1)) // the server's verdict on our certificate arrives here (TLS 1.3)
		return err
	}
	for _, nt := range []*NodeTLS{n2, n3} {
		if err := connects(nt); err != nil {
			t.Fatalf("before any revocation: %v", err)
		}
	}
	list, added, total, err := Revoke(caCert, caKey, empty, []*big.Int{n3Serial}, time.Now(), time.Hour)
	if err != nil || added != 1 || total != 1 {
		t.Fatalf("revoke n3: %d added, %d total, %v", added, total, err)
	}
	writeCRL(list)
	if err := connects(n3); err != nil {
		t.Fatalf("n3 refused before Reload: %v", err)
	}
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := connects(n3); err == nil {
		t.Fatal("a revoked peer still connects after Reload")
	}
	if err := connects(n2); err != nil {
		t.Fatalf("a peer that is not revoked: %v", err)
	}
	if cert := tlsLeaf(t, n3); !server.Revoked(cert) {
		t.Fatal("Revoked(n3) = false")
	}
	if server.Revoked(tlsLeaf(t, n2)) {
		t.Fatal("Revoked(n2) = true")
	}

	// As a dialer: n1 revoked in n2's list, so n2 will not talk to it.
	n2f := writeIdentity(t, t.TempDir(), "n2", caCert, caKey)
	n2f.CRL = filepath.Join(t.TempDir(), "ca.crl")
	serverList, _, _, err := Revoke(caCert, caKey, nil, []*big.Int{tlsLeaf(t, server).SerialNumber}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n2f.CRL, serverList, 0o600); err != nil {
		t.Fatal(err)
	}
	strict, err := LoadNodeTLS(n2f)
	if err != nil {
		t.Fatal(err)
	}
	if conn, err := strict.Dial(nil)(t.Context(), "tcp", ln.Addr().String()); err == nil {
		conn.Close()
		t.Fatal("dialed a server whose certificate is revoked")
	}

	// A list from another CA, or garbage, is refused and the old list stays.
	otherCert, otherKey := testCA(t)
	foreign, _, _, err := Revoke(otherCert, otherKey, nil, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{foreign, []byte("not a list")} {
		writeCRL(bad)
		if err := server.Reload(); !errors.Is(err, ErrTLS) {
			t.Fatalf("Reload of a bad list: %v, want ErrTLS", err)
		}
		if err := connects(n3); err == nil {
			t.Fatal("a failed Reload dropped the revocation")
		}
	}
	if _, _, _, err := Revoke(caCert, caKey, foreign, []*big.Int{big.NewInt(7)}, time.Now(), time.Hour); !errors.Is(err, ErrTLS) {
		t.Fatalf("extending another CA's list: %v, want ErrTLS", err)
	}

	// Extending keeps what was there. The node's own certificate on the
	// list stops it from loading; on a reload the new list is in force
	// all the same (n2 is on it too), with ErrOwnCertRevoked to say so.
	self := tlsLeaf(t, server).SerialNumber
	more, added, total, err := Revoke(caCert, caKey, list, []*big.Int{n3Serial, n2Serial, self}, time.Now(), time.Hour)
	if err != nil || added != 2 || total != 3 {
		t.Fatalf("extend: %d added, %d total, %v", added, total, err)
	}
	writeCRL(more)
	if _, err := LoadNodeTLS(f); !errors.Is(err, ErrOwnCertRevoked) || !errors.Is(err, ErrTLS) {
		t.Fatalf("load with the node's own certificate revoked: %v, want ErrOwnCertRevoked", err)
	}
	if err := server.Reload(); !errors.Is(err, ErrOwnCertRevoked) {
		t.Fatalf("reload with the node's own certificate revoked: %v, want ErrOwnCertRevoked", err)
	}
	if err := connects(n2); err == nil {
		t.Fatal("the list that also revokes the node's own certificate was not put in force")
	}
}

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]int64{"1A": 26, "0x1a": 26, "01:1A": 282, " ff ": 255} {
		n, err := ParseSerial(in)
		if err != nil || n.Int64() != want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %d", in, n, err, want)
		}
		if got, _ := ParseSerial(SerialHex(n)); got.Cmp(n) != 0 {
			t.Errorf("SerialHex round trip of %v: %v", n, got)
		}
	}
	for _, bad := range []string{"", "xyz", "0", "-5"} {
		if _, err := ParseSerial(bad); !errors.Is(err, ErrTLS) {
			t.Errorf("ParseSerial(%q): %v, want ErrTLS", bad, err)
		}
	}
}

// tlsLeaf is the certificate nt presents.
func tlsLeaf(t *testing.T, nt *NodeTLS) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(nt.cur.Load().cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}
