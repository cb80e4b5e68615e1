package main

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

const day = 24 * time.Hour

// certCommand makes the files a TLS cluster needs: a CA, a certificate
// per node, client certificates for operators, a gossip key, and the
// CA's revocation list. Keys are written with mode 0600 and nothing is
// overwritten but the revocation list, which revoke extends.
func certCommand() *cli.Command {
	dir := func() cli.Flag {
		return &cli.StringFlag{Name: "dir", Value: "certs", Usage: "`DIR` the files are written to (created if missing)"}
	}
	caFlags := func() []cli.Flag {
		return []cli.Flag{
			&cli.StringFlag{Name: "ca-cert", Usage: "the CA certificate `FILE` (default DIR/ca.crt)"},
			&cli.StringFlag{Name: "ca-key", Usage: "the CA key `FILE` (default DIR/ca.key)"},
		}
	}
	return &cli.Command{
		Name:  "cert",
		Usage: "make TLS files: a CA, node and client certificates, a gossip key",
		Subcommands: []*cli.Command{
			{
				Name:  "ca",
				Usage: "make a new cluster CA: DIR/ca.crt (give it to every node and client) and DIR/ca.key (keep it offline)",
				Flags: withEnv(dir(), &cli.IntFlag{Name: "days", Value: 3650, Usage: "validity in days"}),
				Action: func(c *cli.Context) error {
					if err := exactArgs(c); err != nil {
						return err
					}
					if c.Int("days") <= 0 {
						return usageErrorf(c, "days: must be positive, got %d", c.Int("days"))
					}
					certPEM, keyPEM, err := transport.NewCA("HATS cluster CA", time.Now(), time.Duration(c.Int("days"))*day)
					if err != nil {
						return err
					}
					certPath, keyPath, err := writePair(c.String("dir"), "ca", certPEM, keyPEM)
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, certPath)
					fmt.Fprintln(c.App.Writer, keyPath)
					return nil
				},
			},
			{
				Name:  "node",
				Usage: "make a node certificate DIR/NAME.crt and key DIR/NAME.key (for --tls-cert and --tls-key), signed by the CA",
				Flags: withEnv(append([]cli.Flag{
					dir(),
					&cli.StringFlag{Name: "name", Value: "node", Usage: "`NAME` of the files and the certificate's common name"},
					&cli.StringFlag{Name: "host", Usage: "comma-separated IP addresses and DNS names the node is reached at (the hosts of its --http-addr and --raft-addr)"},
					&cli.IntFlag{Name: "days", Value: 365, Usage: "validity in days"},
				}, caFlags()...)...),
				Action: func(c *cli.Context) error {
					hosts := splitList(c.String("host"))
					if len(hosts) == 0 {
						return usageErrorf(c, "host: pass --host with the node's IP addresses or DNS names")
					}
					return issue(c, transport.CertNode, hosts)
				},
			},
			{
				Name:  "client",
				Usage: "make a client certificate DIR/NAME.crt and key DIR/NAME.key for an operator (hats cluster --tls-cert/--tls-key), signed by the CA",
				Flags: withEnv(append([]cli.Flag{
					dir(),
					&cli.StringFlag{Name: "name", Value: "operator", Usage: "`NAME` of the files and the certificate's common name"},
					&cli.IntFlag{Name: "days", Value: 365, Usage: "validity in days"},
				}, caFlags()...)...),
				Action: func(c *cli.Context) error { return issue(c, transport.CertClient, nil) },
			},
			{
				Name:      "revoke",
				Usage:     "add certificates to the CA's revocation list DIR/ca.crl (for the nodes' --tls-crl), by file or --serial",
				ArgsUsage: "[CERT_FILE...]",
				Description: "Creates the list on first use and adds to it after that (signed by the CA, numbered anew each time); " +
					"with nothing to revoke it creates an empty list, or signs the current one anew. " +
					"Copy the file to every node and send them SIGHUP: from then on they refuse the revoked certificates, " +
					"on new connections and on every admin request.",
				Flags: withEnv(append([]cli.Flag{
					dir(),
					&cli.StringFlag{Name: "crl", Usage: "the revocation list `FILE` to create or extend (default DIR/ca.crl)"},
					&cli.StringSliceFlag{Name: "serial", Usage: "a serial number to revoke, in hex as openssl x509 -serial prints it (repeatable)"},
					&cli.IntFlag{Name: "days", Value: 365, Usage: "days until the list's Next Update (informational: nodes enforce the list they hold)"},
				}, caFlags()...)...),
				Action: revoke,
			},
			{
				Name:  "gossip-key",
				Usage: "make DIR/gossip.key, a random 32-byte key for --gossip-key-file (the same file on every node)",
				Flags: withEnv(dir()),
				Action: func(c *cli.Context) error {
					if err := exactArgs(c); err != nil {
						return err
					}
					key, err := newGossipKeyFile()
					if err != nil {
						return err
					}
					path := filepath.Join(c.String("dir"), "gossip.key")
					if err := writeNew(path, key, 0o600); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, path)
					return nil
				},
			},
		},
	}
}

// revoke adds the certificates named by arguments and --serial to the
// CA's revocation list.
func revoke(c *cli.Context) error {
	if c.Int("days") <= 0 {
		return usageErrorf(c, "days: must be positive, got %d", c.Int("days"))
	}
	var serials []*big.Int
	for _, s := range c.StringSlice("serial") {
		n, err := transport.ParseSerial(s)
		if err != nil {
			return usageErrorf(c, "serial: %v", err)
		}
		serials = append(serials, n)
	}
	dir := c.String("dir")
	caCert, caKey, err := readCA(c)
	if err != nil {
		return err
	}
	ca, err := parseCertPEM(caCert, "ca-cert")
	if err != nil {
		return err
	}
	for _, f := range c.Args().Slice() {
		cert, err := readCertFile(f)
		if err != nil {
			return err
		}
		if !bytes.Equal(cert.RawIssuer, ca.RawSubject) || cert.CheckSignatureFrom(ca) != nil {
			return fmt.Errorf("%s was not issued by this CA (%q): its list cannot revoke it", f, ca.Subject.CommonName)
		}
		serials = append(serials, cert.SerialNumber)
	}
	path := firstNonEmpty(c.String("crl"), filepath.Join(dir, "ca.crl"))
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("crl: %w", err)
	}
	crl, added, total, err := transport.Revoke(caCert, caKey, old, serials, time.Now(), time.Duration(c.Int("days"))*day)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("crl: %w", err)
	}
	if err := node.WriteFileAtomic(path, crl, 0o644); err != nil {
		return fmt.Errorf("crl: %w", err)
	}
	fmt.Fprintln(c.App.Writer, path)
	fmt.Fprintf(c.App.Writer, "revoked %d (%d on the list); copy it to every node's --tls-crl and send them SIGHUP\n", added, total)
	return nil
}

// readCertFile reads the first certificate of a PEM file.
func readCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCertPEM(data, path)
}

// parseCertPEM parses the first PEM certificate in data; name says whose.
func parseCertPEM(data []byte, name string) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", name)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cert, nil
}

// newGossipKeyFile is the contents of a new --gossip-key-file: 32 random
// bytes in base64 and a newline.
func newGossipKeyFile() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(key) + "\n"), nil
}

// issue signs a certificate of kind with the CA named by the flags.
func issue(c *cli.Context, kind transport.CertKind, hosts []string) error {
	if err := exactArgs(c); err != nil {
		return err
	}
	if c.Int("days") <= 0 {
		return usageErrorf(c, "days: must be positive, got %d", c.Int("days"))
	}
	name, dir := c.String("name"), c.String("dir")
	if name == "" || name == "ca" || filepath.Base(name) != name {
		return usageErrorf(c, "name: must be a plain file name other than ca, got %q", name)
	}
	certPEM, keyPEM, err := readCA(c)
	if err != nil {
		return err
	}
	certPath, keyPath, err := issuePair(dir, name, certPEM, keyPEM, kind, hosts, time.Duration(c.Int("days"))*day)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, certPath)
	fmt.Fprintln(c.App.Writer, keyPath)
	return nil
}

// readCA reads the CA certificate and key the flags name (default
// DIR/ca.crt and DIR/ca.key).
func readCA(c *cli.Context) (certPEM, keyPEM []byte, err error) {
	dir := c.String("dir")
	caCert, caKey := firstNonEmpty(c.String("ca-cert"), filepath.Join(dir, "ca.crt")), firstNonEmpty(c.String("ca-key"), filepath.Join(dir, "ca.key"))
	if certPEM, err = os.ReadFile(caCert); err != nil {
		return nil, nil, fmt.Errorf("ca-cert: %w (make one with hats cert ca)", err)
	}
	if keyPEM, err = os.ReadFile(caKey); err != nil {
		return nil, nil, fmt.Errorf("ca-key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// issuePair signs a certificate of kind for name with the CA and writes
// it and its key as DIR/NAME.crt and DIR/NAME.key.
func issuePair(dir, name string, caCert, caKey []byte, kind transport.CertKind, hosts []string, validity time.Duration) (certPath, keyPath string, err error) {
	cert, key, err := transport.IssueCert(caCert, caKey, kind, name, hosts, time.Now(), validity)
	if err != nil {
		return "", "", err
	}
	return writePair(dir, name, cert, key)
}

// writePair writes DIR/NAME.crt (0644) and DIR/NAME.key (0600), refusing
// to replace either.
func writePair(dir, name string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("%s exists; not replacing it (remove it first)", p)
		}
	}
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeNew(certPath, certPEM, 0o644)
}

// writeNew creates path with perm; an existing file is an error.
func writeNew(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not replacing it (remove it first)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
