package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// CertKind says what a certificate issued by IssueCert is for.
type CertKind int

const (
	// CertNode serves the API and Raft and also dials peers as a client,
	// so it carries both usages and must name the node's hosts.
	CertNode CertKind = iota
	// CertClient identifies an operator or program to the admin
	// endpoints; it names no host.
	CertClient
)

// NewCA makes a self-signed ECDSA P-256 CA certificate and its key, both
// PEM encoded, valid from a minute before now for validity.
func NewCA(name string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, tmpl, err := newKeyAndTemplate(name, now, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	return encodePair(der, key)
}

// IssueCert makes a certificate of kind for name (its common name), signed
// by the CA in caCertPEM/caKeyPEM. A node certificate must name every host
// (IP address or DNS name) clients and peers reach it by.
func IssueCert(caCertPEM, caKeyPEM []byte, kind CertKind, name string, hosts []string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	ca, caKey, err := parseCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, tmpl, err := newKeyAndTemplate(name, now, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	switch kind {
	case CertNode:
		if len(hosts) == 0 {
			return nil, nil, fmt.Errorf("%w: a node certificate needs at least one host", ErrTLS)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range hosts {
			h = strings.TrimSpace(h)
			switch {
			case h == "":
			case net.ParseIP(h) != nil:
				tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(h))
			default:
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	case CertClient:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, nil, fmt.Errorf("%w: unknown certificate kind %d", ErrTLS, kind)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	return encodePair(der, key)
}

// newKeyAndTemplate draws a P-256 key and a random serial and fills in
// what every certificate here shares: name, organization, validity.
func newKeyAndTemplate(name string, now time.Time, validity time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	if name == "" {
		return nil, nil, fmt.Errorf("%w: a certificate needs a name", ErrTLS)
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("%w: validity must be positive, got %s", ErrTLS, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	return key, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"HATS"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
	}, nil
}

func parseCA(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%w: CA certificate: no PEM CERTIFICATE block", ErrTLS)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: CA certificate: %v", ErrTLS, err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%w: %q is not a CA certificate", ErrTLS, ca.Subject.CommonName)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%w: CA key: no PEM block", ErrTLS)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: CA key: %v", ErrTLS, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.Join(ErrTLS, errors.New("CA key: unsupported key type"))
	}
	if eq, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(ca.PublicKey) {
		return nil, nil, fmt.Errorf("%w: CA key does not match the CA certificate", ErrTLS)
	}
	return ca, signer, nil
}

func encodePair(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return certPEM, keyPEM, nil
}
