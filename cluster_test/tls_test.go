package cluster_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// testPKI is a CA in a temp dir that issues node and client certificates
// into files, as `hats cert` does for an operator.
type testPKI struct {
	t             testing.TB
	dir           string
	caCert, caKey []byte
	mu            sync.Mutex
	nodes         map[string]*transport.NodeTLS
	issued        int
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	cert, key, err := transport.NewCA("test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), caCert: cert, caKey: key, nodes: map[string]*transport.NodeTLS{}}
	if err := os.WriteFile(p.caFile(), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	p.revoke() // an empty list, which every node loads (--tls-crl)
	return p
}

func (p *testPKI) caFile() string  { return filepath.Join(p.dir, "ca.crt") }
func (p *testPKI) crlFile() string { return filepath.Join(p.dir, "ca.crl") }

// revoke adds serials to the CA's revocation list file, as `hats cert
// revoke` does; the nodes see it after a Reload (SIGHUP).
func (p *testPKI) revoke(serials ...*big.Int) {
	p.t.Helper()
	old, err := os.ReadFile(p.crlFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		p.t.Fatal(err)
	}
	crl, _, _, err := transport.Revoke(p.caCert, p.caKey, old, serials, time.Now(), time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(p.crlFile(), crl, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// files issues a certificate of kind for name and writes it, its key and
// the CA certificate.
func (p *testPKI) files(kind transport.CertKind, name string, hosts ...string) transport.TLSFiles {
	p.t.Helper()
	cert, key, err := transport.IssueCert(p.caCert, p.caKey, kind, name, hosts, time.Now(), time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.issued++
	base := filepath.Join(p.dir, fmt.Sprintf("%s-%d", name, p.issued))
	p.mu.Unlock()
	f := transport.TLSFiles{CA: p.caFile(), Cert: base + ".crt", Key: base + ".key"}
	for path, data := range map[string][]byte{f.Cert: cert, f.Key: key} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	return f
}

// nodeTLS is node id's TLS setup, the same one across restarts.
func (p *testPKI) nodeTLS(id string) *transport.NodeTLS {
	p.t.Helper()
	p.mu.Lock()
	nt := p.nodes[id]
	p.mu.Unlock()
	if nt != nil {
		return nt
	}
	f := p.files(transport.CertNode, id, "127.0.0.1", "localhost")
	f.CRL = p.crlFile()
	nt, err := transport.LoadNodeTLS(f)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.nodes[id] = nt
	p.mu.Unlock()
	return nt
}

// clientTLS trusts the CA; with a name it also presents a client
// certificate issued to that name.
func (p *testPKI) clientTLS(name string) *tls.Config {
	p.t.Helper()
	f := transport.TLSFiles{CA: p.caFile()}
	if name != "" {
		f = p.files(transport.CertClient, name)
	}
	cfg, err := transport.LoadClientTLS(f)
	if err != nil {
		p.t.Fatal(err)
	}
	return cfg
}

// tlsCluster starts n nodes serving TLS (API and mutual-TLS Raft) with an
// encrypted gossip ring, and a client configuration that trusts their CA.
func tlsCluster(t *testing.T, n int, gossipKey []byte) (*Cluster, *testPKI) {
	ca := newTestPKI(t)
	var mu sync.Mutex
	gossipAddrs := map[string]string{}
	c := NewCluster(t, n, func(cfg *node.Config) {
		cfg.TLS = ca.nodeTLS(cfg.ID)
		mu.Lock()
		defer mu.Unlock()
		if gossipAddrs[cfg.ID] == "" {
			gossipAddrs[cfg.ID] = freeAddr(t)
		}
		cfg.GossipAddr, cfg.GossipKey = gossipAddrs[cfg.ID], gossipKey
	})
	c.ClientTLS = ca.clientTLS("")
	return c, ca
}

// Test_TLS_Cluster: a cluster whose API serves https and whose Raft runs
// mutual TLS trades through every path (HTTP at a follower, forwarded to
// the leader; an upgraded binary order stream at the leader and one at a
// follower, which forwards on a forward stream); clients that do not
// trust the CA, or speak plaintext, get nothing; the admin endpoints want
// a client certificate from the CA; Raft refuses a peer without one; a
// node whose certificate another CA signed cannot join; an unkeyed gossip
// member cannot join the encrypted ring. Every node ends with the same
// state.
func Test_TLS_Cluster(t *testing.T) {
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		t.Fatal(err)
	}
	c, ca := tlsCluster(t, 3, gossipKey)
	ctx := context.Background()
	waitGossipHealthy(t, c, 3) // over the encrypted ring

	// Trading over https, starting at a follower.
	follower := c.Followers()[0]
	cl := c.Client(follower)
	Trader(t, cl, "tls-trader")
	if err := cl.SetPreferred(follower.HTTPAddr); err != nil {
		t.Fatal(err)
	}
	if cl.Preferred() != "https://"+follower.HTTPAddr {
		t.Fatalf("client prefers %s, want https://%s", cl.Preferred(), follower.HTTPAddr)
	}
	if _, err := cl.Deposit(ctx, "100000.00", ""); err != nil {
		t.Fatal(err)
	}
	WaitInstruments(t, cl)
	placed := 0
	place := func(how string, f func(transport.OrderRequest) (*transport.Order, error)) {
		t.Helper()
		placed++
		req := transport.OrderRequest{ClientID: fmt.Sprintf("tls-%s-%d", how, placed), Symbol: "AAPL", Side: "buy", Type: "limit", Quantity: 1, LimitPrice: "1.00"}
		o, err := f(req)
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if o.Status != "open" {
			t.Fatalf("%s: order %+v, want open", how, o)
		}
	}
	place("http-follower", func(r transport.OrderRequest) (*transport.Order, error) { return cl.PlaceOrder(ctx, r) })
	for _, toLeader := range []bool{true, false} {
		if err := cl.SetPreferred(follower.HTTPAddr); err != nil {
			t.Fatal(err)
		}
		cl.SetOrderStreamsToLeader(toLeader)
		s, err := cl.OpenOrderStream(ctx)
		if err != nil {
			t.Fatalf("order stream (to leader %v): %v", toLeader, err)
		}
		if !s.Binary() || !strings.HasPrefix(s.Node(), "https://") || s.AtLeader() != toLeader {
			t.Fatalf("order stream at %s (binary %v, at leader %v), want binary over https, at leader %v", s.Node(), s.Binary(), s.AtLeader(), toLeader)
		}
		for range 3 {
			place("stream-"+strconv.FormatBool(toLeader), func(r transport.OrderRequest) (*transport.Order, error) { return s.Place(ctx, r) })
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	orders, err := cl.Orders(ctx, transport.OrdersQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(orders.Orders) != placed {
		t.Fatalf("%d orders listed, want %d", len(orders.Orders), placed)
	}

	// Clients that cannot verify the nodes, or speak plaintext.
	other := newTestPKI(t)
	for name, cfg := range map[string]transport.ClientConfig{
		"another CA": {Nodes: c.Addrs(), TLS: other.clientTLS("")},
		"plaintext":  {Nodes: c.Addrs()},
	} {
		cfg.Timeout, cfg.MaxAttempts = time.Second, 3
		bad, err := transport.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.Status(ctx); err == nil {
			t.Fatalf("%s: a status call succeeded", name)
		}
	}

	// Admin endpoints need a client certificate from the CA.
	leader := c.Leader()
	if err := c.Client(leader).TransferLeadership(ctx, ""); !errors.Is(err, transport.ErrForbidden) || transport.ErrorCode(err) != transport.CodeClientCertRequired {
		t.Fatalf("transfer without a client certificate: %v, want %s", err, transport.CodeClientCertRequired)
	}
	foreignOp, err := transport.NewClient(transport.ClientConfig{Nodes: c.Addrs(leader), TLS: mixedTLS(c.ClientTLS, other.clientTLS("intruder")), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := foreignOp.TransferLeadership(ctx, ""); err == nil {
		t.Fatal("transfer with another CA's client certificate succeeded")
	}
	if c.Leader() != leader {
		t.Fatal("leadership moved without a valid client certificate")
	}
	op, err := transport.NewClient(transport.ClientConfig{Nodes: c.Addrs(leader), TLS: ca.clientTLS("operator"), Deadline: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := op.TransferLeadership(ctx, ""); err != nil {
		t.Fatalf("transfer with the operator's certificate: %v", err)
	}
	Poll(t, 10*time.Second, "a new leader", func() error {
		if l := c.Leader(); l == leader {
			return errors.New("old leader still leads")
		}
		return nil
	})

	// Revocation: once the nodes load a list naming an operator's
	// certificate, an admin request on a connection opened before is
	// refused (403 certificate_revoked), and so is a new connection (in
	// the handshake); other operators go on.
	revokedTLS := ca.clientTLS("leaver")
	adminConn := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: revokedTLS, MaxConnsPerHost: 1}}
	adminCall := func(hc *http.Client) (status int, body string, reused bool, err error) {
		var info httptrace.GotConnInfo
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { info = i }}),
			http.MethodPost, "https://"+c.Nodes[0].HTTPAddr+"/v1/cluster/transfer-leadership", strings.NewReader(`{"id":"no-such-node"}`))
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", info.Reused, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), info.Reused, nil
	}
	if status, body, _, err := adminCall(adminConn); err != nil || status != http.StatusNotFound {
		t.Fatalf("admin call before the revocation: %d %s %v, want 404 for the unknown node", status, body, err)
	}
	ca.revoke(revokedTLS.Certificates[0].Leaf.SerialNumber)
	for _, tn := range c.Nodes {
		if err := ca.nodeTLS(tn.ID).Reload(); err != nil {
			t.Fatal(err)
		}
	}
	st, msg, reused, err := adminCall(adminConn)
	if err != nil || !reused || st != http.StatusForbidden || !strings.Contains(msg, transport.CodeCertRevoked) {
		t.Fatalf("admin call on the old connection after the revocation: %d %s (reused %v) %v, want 403 %s", st, msg, reused, err, transport.CodeCertRevoked)
	}
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: revokedTLS.Clone()}}
	if status, body, _, err := adminCall(fresh); err == nil {
		t.Fatalf("a new connection with a revoked certificate: %d %s, want the handshake refused", status, body)
	}
	if _, err := op.ClusterStatus(ctx); err != nil {
		t.Fatalf("another operator after the revocation: %v", err)
	}

	// Raft: a TLS client without a certificate, or with an operator's
	// (client-only) certificate from the right CA, is dropped in the
	// handshake.
	operatorTLS := ca.clientTLS("raft-intruder")
	operatorTLS.ServerName = "127.0.0.1"
	for name, cfg := range map[string]*tls.Config{"no certificate": c.ClientTLS.Clone(), "an operator's certificate": operatorTLS} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", c.Leader().RaftAddr, cfg)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = conn.Write([]byte{0})
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Raft port with %s: %v, want the handshake refused", name, err)
		}
	}
	// Internal endpoints want a node's certificate, not an operator's.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: ca.clientTLS("internal-intruder")}}
	resp, err := hc.Post("https://"+c.Leader().HTTPAddr+transport.PathInternalApplyMany, "application/octet-stream", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), transport.CodeClientCertRequired) {
		t.Fatalf("internal endpoint with an operator's certificate: %d %s, want 403 %s", resp.StatusCode, body, transport.CodeClientCertRequired)
	}

	// A node certified by another CA cannot join.
	intruder := &TNode{ID: "n4", Dir: filepath.Join(t.TempDir(), "n4"), RaftAddr: freeAddr(t), HTTPAddr: freeAddr(t)}
	cfg := c.Config(intruder, c.Addrs())
	cfg.TLS = other.nodeTLS("n4")
	cfg.GossipAddr, cfg.JoinAttempts = "", 2
	if err := c.startWith(intruder, cfg); err == nil {
		t.Fatal("a node with another CA's certificate joined")
	}
	if st, err := op.ClusterStatus(ctx); err != nil || len(st.Nodes) != 3 {
		t.Fatalf("members after the intruder: %v (%v), want 3", st, err)
	}

	// Gossip: a member without the key is not let into the ring.
	mc := memberlist.DefaultLANConfig()
	mc.Name, mc.BindAddr, mc.BindPort = "plain", "127.0.0.1", 0
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	gossipAt := ""
	for _, m := range c.Nodes[0].Node.Members() {
		if m.ID == c.Nodes[0].ID {
			gossipAt = m.GossipAddr
		}
	}
	if gossipAt == "" {
		t.Fatal("n1 lists no gossip address for itself")
	}
	if n, err := ml.Join([]string{gossipAt}); err == nil || n != 0 {
		t.Fatalf("an unkeyed gossip member joined the encrypted ring (%d, %v)", n, err)
	}
	c.EnsureSame()
}

// mixedTLS trusts base's CA but presents pres's client certificate.
func mixedTLS(base, pres *tls.Config) *tls.Config {
	out := base.Clone()
	out.Certificates = pres.Certificates
	return out
}
