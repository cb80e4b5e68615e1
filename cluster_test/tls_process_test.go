package cluster_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hats-trading/hats/transport"
)

// TestProcess_TLSCluster runs what docs/operations.md tells an operator to
// do for TLS, with real processes: `hats cert` makes a CA, a certificate
// per node, an operator's client certificate and a gossip key; three
// `hats node` processes run with them (no --insecure); a trader registers,
// logs in with --tls-ca once and trades without repeating it; leadership
// transfer is refused without the operator's certificate and works with
// it; a node rotates its certificate on SIGHUP; every node ends with the
// same state.
func TestProcess_TLSCluster(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	env := hatsEnv()
	must := func(args ...string) string {
		t.Helper()
		r := runHats(t, 30*time.Second, env, "", args...)
		if r.Code != 0 {
			t.Fatalf("%s", r)
		}
		return r.Stdout
	}
	must("cert", "ca", "--dir", certs)
	for _, id := range []string{"n1", "n2", "n3"} {
		must("cert", "node", "--dir", certs, "--name", id, "--host", "127.0.0.1,localhost")
	}
	must("cert", "client", "--dir", certs, "--name", "operator")
	must("cert", "gossip-key", "--dir", certs)
	must("cert", "revoke", "--dir", certs) // an empty revocation list, for --tls-crl
	if r := runHats(t, 30*time.Second, env, "", "cert", "ca", "--dir", certs); r.Code == 0 || !strings.Contains(r.Stderr, "exists") {
		t.Fatalf("a second CA over the first: %s", r)
	}
	for _, f := range []string{"ca.key", "n1.key", "operator.key", "gossip.key"} {
		if st, err := os.Stat(filepath.Join(certs, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v, want 0600", f, err, st.Mode())
		}
	}
	ca := filepath.Join(certs, "ca.crt")
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	https := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	var nodes []*Proc
	for _, id := range []string{"n1", "n2", "n3"} {
		var join []string
		for _, o := range nodes {
			join = append(join, "https://"+o.HTTPAddr) // URLs of the node's kind are fine too
		}
		p := NewProc(t, dir, id, join, append(procFast,
			"--tls-cert", filepath.Join(certs, id+".crt"), "--tls-key", filepath.Join(certs, id+".key"), "--tls-ca", ca,
			"--tls-crl", filepath.Join(certs, "ca.crl"), "--gossip-addr", procFreeAddr(t), "--gossip-key-file", filepath.Join(certs, "gossip.key"), "--feed", "none")...)
		p.HTTPS = https
		p.Start()
		nodes = append(nodes, p)
	}
	var addrs []string
	for _, p := range nodes {
		addrs = append(addrs, p.HTTPAddr)
	}
	cluster := strings.Join(addrs, ",")
	clientEnv := hatsEnv("HATS_SESSION="+filepath.Join(dir, "session.json"), "HATS_CLUSTER="+cluster)
	hats := func(stdin string, args ...string) hatsRun {
		t.Helper()
		return runHats(t, 30*time.Second, clientEnv, stdin, args...)
	}
	Poll(t, 30*time.Second, "three voters, one leader, over TLS", func() error {
		r := hats("", "cluster", "status", "--tls-ca", ca, "--json")
		if r.Code != 0 {
			return errors.New(r.String())
		}
		var st transport.ClusterStatus
		if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
			return err
		}
		if st.Leader == "" || len(st.Nodes) != 3 {
			return fmt.Errorf("leader %q, %d nodes", st.Leader, len(st.Nodes))
		}
		return nil
	})

	if r := hats("", "cluster", "status"); r.Code == 0 || !strings.Contains(r.Stderr, "--insecure") {
		t.Fatalf("plaintext status without --insecure: %s", r)
	}
	if r := hats("pw-tls-123\n", "trade", "register", "tlsuser", "--password-stdin", "--tls-ca", ca); r.Code != 0 {
		t.Fatalf("%s", r)
	}
	if r := hats("pw-tls-123\n", "trade", "login", "tlsuser", "--password-stdin", "--tls-ca", ca); r.Code != 0 {
		t.Fatalf("%s", r)
	}
	// From here the session file carries the CA.
	for _, args := range [][]string{
		{"trade", "deposit", "1000.00"},
		{"trade", "buy", "AAPL", "2", "--limit", "1.00"},
	} {
		if r := hats("", args...); r.Code != 0 {
			t.Fatalf("%s", r)
		}
	}
	r := hats("", "trade", "orders", "--json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"AAPL"`) {
		t.Fatalf("orders: %s", r)
	}

	// Leadership transfer: the operator's certificate is required.
	if r := hats("", "cluster", "transfer-leadership", "--tls-ca", ca); r.Code == 0 || !strings.Contains(r.Stderr, "client certificate") {
		t.Fatalf("transfer without a client certificate: %s", r)
	}
	if r := hats("", "cluster", "transfer-leadership", "--tls-ca", ca,
		"--tls-cert", filepath.Join(certs, "operator.crt"), "--tls-key", filepath.Join(certs, "operator.key")); r.Code != 0 {
		t.Fatalf("transfer with the operator's certificate: %s", r)
	}

	// A backup over TLS is an operator's too.
	backup := filepath.Join(dir, "tls.backup")
	if r := hats("", "cluster", "backup", "--out", backup, "--tls-ca", ca); r.Code == 0 || !strings.Contains(r.Stderr, "client certificate") {
		t.Fatalf("backup without a client certificate: %s", r)
	}
	if r := hats("", "cluster", "backup", "--out", backup, "--tls-ca", ca,
		"--tls-cert", filepath.Join(certs, "operator.crt"), "--tls-key", filepath.Join(certs, "operator.key")); r.Code != 0 || !strings.Contains(r.Stdout, "backup of") {
		t.Fatalf("backup with the operator's certificate: %s", r)
	}

	// Rotation: n1 gets a new certificate in the same files and SIGHUP.
	served := func() string {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", nodes[0].HTTPAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	must("cert", "node", "--dir", certs, "--name", "n1-new", "--host", "127.0.0.1")
	for _, ext := range []string{".crt", ".key"} {
		if err := os.Rename(filepath.Join(certs, "n1-new"+ext), filepath.Join(certs, "n1"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	newPEM, err := os.ReadFile(filepath.Join(certs, "n1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(newPEM)
	newCert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if served() != before {
		t.Fatal("the certificate changed before SIGHUP")
	}
	nodes[0].signal(syscall.SIGHUP)
	Poll(t, 10*time.Second, "n1 serves its new certificate", func() error {
		if got := served(); got != newCert.SerialNumber.String() {
			return fmt.Errorf("serves %s, want %s", got, newCert.SerialNumber)
		}
		return nil
	})
	if r := hats("", "trade", "buy", "AAPL", "1", "--limit", "1.00"); r.Code != 0 {
		t.Fatalf("a trade after the rotation: %s", r)
	}

	// Revocation: a second operator's certificate works until hats cert
	// revoke lists it and the nodes get SIGHUP; the first operator's
	// goes on working, and so does trading.
	must("cert", "client", "--dir", certs, "--name", "leaver")
	asOperator := func(name string) hatsRun {
		return hats("", "cluster", "transfer-leadership", "--tls-ca", ca,
			"--tls-cert", filepath.Join(certs, name+".crt"), "--tls-key", filepath.Join(certs, name+".key"))
	}
	if r := asOperator("leaver"); r.Code != 0 {
		t.Fatalf("transfer with the second operator's certificate: %s", r)
	}
	if out := must("cert", "revoke", "--dir", certs, filepath.Join(certs, "leaver.crt")); !strings.Contains(out, "revoked 1 (1 on the list)") {
		t.Fatalf("hats cert revoke: %q", out)
	}
	for _, p := range nodes {
		p.signal(syscall.SIGHUP)
	}
	Poll(t, 10*time.Second, "every node refuses the revoked certificate", func() error {
		for _, p := range nodes {
			r := hats("", "cluster", "transfer-leadership", "--cluster", p.HTTPAddr, "--tls-ca", ca,
				"--tls-cert", filepath.Join(certs, "leaver.crt"), "--tls-key", filepath.Join(certs, "leaver.key"))
			if r.Code == 0 {
				return fmt.Errorf("%s still takes it", p.ID)
			}
			if !strings.Contains(r.Stderr, "bad certificate") {
				t.Fatalf("%s refused the revoked certificate, but not for that: %s", p.ID, r)
			}
		}
		return nil
	})
	if r := asOperator("operator"); r.Code != 0 {
		t.Fatalf("transfer with the first operator's certificate after the revocation: %s", r)
	}
	if r := hats("", "trade", "buy", "AAPL", "1", "--limit", "1.00"); r.Code != 0 {
		t.Fatalf("a trade after the revocation: %s", r)
	}

	Poll(t, 20*time.Second, "identical state on every node", func() error {
		var hash string
		for i, p := range nodes {
			var st transport.NodeStatus
			if err := p.get("/v1/status?fresh=true", &st); err != nil {
				return err
			}
			if i == 0 {
				hash = st.StateHash
			} else if st.StateHash != hash || hash == "" {
				return fmt.Errorf("%s hash %q, n1 %q", p.ID, st.StateHash, hash)
			}
		}
		return nil
	})
}

// TestProcess_DemoTLS: `hats demo --tls` makes its own CA and
// certificates, serves TLS, and prints the exports that work; restarted on
// the same --data-dir it reuses them (the saved session's CA stays valid).
func TestProcess_DemoTLS(t *testing.T) {
	dir := t.TempDir()
	var cluster, caPath, caFirst string
	for run := 1; run <= 2; run++ {
		cluster, caPath = "", ""
		out := filepath.Join(dir, fmt.Sprintf("demo%d.out", run))
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(hatsBinary(t), "demo", "--tls", "--data-dir", filepath.Join(dir, "data"))
		cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = hatsEnv(), f, f, procAttr()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procTrack(cmd)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		Poll(t, 30*time.Second, "the demo prints its exports", func() error {
			b, _ := os.ReadFile(out)
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
					switch k {
					case "export HATS_CLUSTER":
						cluster = v
					case "export HATS_TLS_CA":
						caPath = v
					}
				}
			}
			if cluster == "" || caPath == "" || strings.Contains(string(b), "HATS_INSECURE") {
				return fmt.Errorf("no TLS exports yet: %q", b)
			}
			return nil
		})
		ca, err := os.ReadFile(caPath)
		if err != nil {
			t.Fatal(err)
		}
		if run == 1 {
			caFirst = string(ca)
		} else if string(ca) != caFirst {
			t.Fatal("the restarted demo made a new CA instead of reusing its own")
		}
		env := hatsEnv("HATS_CLUSTER="+cluster, "HATS_TLS_CA="+caPath, "HATS_SESSION="+filepath.Join(dir, "session.json"))
		Poll(t, 20*time.Second, "cluster status over TLS", func() error {
			r := runHats(t, 20*time.Second, env, "", "cluster", "status", "--json")
			var st transport.ClusterStatus
			if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &st) != nil || st.Leader == "" || len(st.Nodes) != 3 {
				return errors.New(r.String())
			}
			return nil
		})
		if r := runHats(t, 20*time.Second, hatsEnv("HATS_CLUSTER="+cluster, "HATS_INSECURE=1"), "", "cluster", "status"); r.Code == 0 {
			t.Fatalf("plaintext status against the TLS demo: %s", r)
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("demo run %d exited with %v", run, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("demo run %d did not stop on SIGINT", run)
		}
		f.Close()
	}
}
