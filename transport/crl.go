package transport

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"
)

// Revocation: a certificate revoked by the cluster's CA (a leaked operator
// key, a retired node) is refused by every node that holds the CA's
// certificate revocation list (--tls-crl), without a new CA or a restart:
// `hats cert revoke` adds it to the list, the file goes to every node, and
// SIGHUP loads it. Nodes check the list they hold, whatever its Next
// Update says; they fetch nothing.

// revocations is a loaded revocation list: issuer and serial of every
// revoked certificate.
type revocations map[string]struct{}

func revocationKey(rawIssuer []byte, serial *big.Int) string {
	return string(rawIssuer) + "\x00" + serial.String()
}

// has reports whether c is on the list.
func (r revocations) has(c *x509.Certificate) bool {
	if len(r) == 0 || c == nil {
		return false
	}
	_, ok := r[revocationKey(c.RawIssuer, c.SerialNumber)]
	return ok
}

// SerialHex writes a certificate serial as openssl's x509 -serial does.
func SerialHex(n *big.Int) string { return strings.ToUpper(n.Text(16)) }

// ParseSerial reads a serial in hex (SerialHex's form, openssl's, or with
// colons between byte pairs).
func ParseSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X"), ":", "")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("%w: serial %q: want a positive hexadecimal number", ErrTLS, s)
	}
	return n, nil
}

// loadCRL reads a CRL file (PEM or DER) and checks that one of cas signed it.
func loadCRL(file string, cas []*x509.Certificate) (revocations, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: --tls-crl: %w", ErrTLS, err)
	}
	crl, err := parseCRL(data, cas)
	if err != nil {
		return nil, fmt.Errorf("%w: --tls-crl %s: %w", ErrTLS, file, err)
	}
	r := revocations{}
	for _, e := range crl.RevokedCertificateEntries {
		r[revocationKey(crl.RawIssuer, e.SerialNumber)] = struct{}{}
	}
	return r, nil
}

func parseCRL(data []byte, cas []*x509.Certificate) (*x509.RevocationList, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("a PEM %q block, want X509 CRL", b.Type)
		}
		der = b.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return crl, nil
		}
	}
	return nil, fmt.Errorf("not signed by a CA of --tls-ca (issuer %q)", crl.Issuer.String())
}

// Revoke returns a revocation list signed by the CA (PEM) holding every
// entry of old (a list this CA signed, or nil for none) and serials, with
// a number one past old's; added counts the serials not already listed.
func Revoke(caCertPEM, caKeyPEM, old []byte, serials []*big.Int, now time.Time, validity time.Duration) (crlPEM []byte, added, total int, err error) {
	ca, key, err := parseCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, 0, 0, err
	}
	if validity <= 0 {
		return nil, 0, 0, fmt.Errorf("%w: validity must be positive, got %s", ErrTLS, validity)
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(validity)}
	seen := map[string]bool{}
	if len(old) > 0 {
		prev, err := parseCRL(old, []*x509.Certificate{ca})
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%w: the existing revocation list: %w", ErrTLS, err)
		}
		tmpl.RevokedCertificateEntries = prev.RevokedCertificateEntries
		if prev.Number != nil {
			tmpl.Number = new(big.Int).Add(prev.Number, big.NewInt(1))
		}
		for _, e := range prev.RevokedCertificateEntries {
			seen[e.SerialNumber.String()] = true
		}
	}
	for _, s := range serials {
		if seen[s.String()] {
			continue
		}
		seen[s.String()] = true
		added++
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca, key)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: sign the revocation list: %w", ErrTLS, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), added, len(tmpl.RevokedCertificateEntries), nil
}
