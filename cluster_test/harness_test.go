// Package cluster_test runs whole HATS clusters: in-process nodes on
// 127.0.0.1 with real bbolt files and real HTTP, and real `hats` processes.
package cluster_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// logWriter sends library logs to t.Log until the test ends, so they show
// only when a test fails and never after it is over.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// TNode is one in-process member with its HTTP API.
type TNode struct {
	ID       string
	Dir      string
	RaftAddr string
	HTTPAddr string
	Node     *node.Node
	srv      *http.Server
	api      *transport.Server
	alive    bool
	// Hide answers 404 for the paths stored in it, as a node of an older
	// version without them would.
	Hide sync.Map
}

// Cluster is a set of in-process nodes on loopback.
type Cluster struct {
	t     testing.TB
	dir   string
	log   *logWriter
	Nodes []*TNode
	// Tune adjusts each node's config before it starts.
	Tune func(*node.Config)
	// ClientTLS is what Client uses when the nodes serve TLS (set by
	// the node configs' TLS, see tls_test.go).
	ClientTLS *tls.Config
}

// freeAddr reserves a loopback port. The listener stays open until the
// test ends (or is taken over by the node using the address) so no two
// callers are handed the same port.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reservedMu.Lock()
	reserved[ln.Addr().String()] = ln
	reservedMu.Unlock()
	t.Cleanup(func() { release(ln.Addr().String()) })
	return ln.Addr().String()
}

var (
	reservedMu sync.Mutex
	reserved   = map[string]net.Listener{}
)

// listen takes over a reserved listener, or binds addr afresh (restarts).
func listen(addr string) (net.Listener, error) {
	reservedMu.Lock()
	ln, ok := reserved[addr]
	delete(reserved, addr)
	reservedMu.Unlock()
	if ok {
		return ln, nil
	}
	return net.Listen("tcp", addr)
}

func release(addr string) {
	reservedMu.Lock()
	ln, ok := reserved[addr]
	delete(reserved, addr)
	reservedMu.Unlock()
	if ok {
		ln.Close()
	}
}

// NewCluster starts n nodes: the first bootstraps, the rest join it.
func NewCluster(t testing.TB, n int, tune func(*node.Config)) *Cluster {
	t.Helper()
	c := newCluster(t, tune)
	for i := 0; i < n; i++ {
		c.AddNode()
	}
	c.WaitReady()
	return c
}

// NewClusterFrom starts n nodes of a new cluster restored from a backup:
// the first node's data dir is made by node.Restore (as `hats restore`
// makes it) and the node started on it; the rest join it.
func NewClusterFrom(t testing.TB, n int, backup string, tune func(*node.Config)) *Cluster {
	t.Helper()
	c := newCluster(t, tune)
	tn := c.newTNode()
	if _, err := node.Restore(node.RestoreConfig{Backup: backup, ID: tn.ID, DataDir: tn.Dir, RaftAddr: tn.RaftAddr}); err != nil {
		t.Fatalf("restore %s: %v", tn.ID, err)
	}
	c.Nodes = append(c.Nodes, tn)
	if err := c.start(tn, nil); err != nil {
		t.Fatalf("start %s: %v", tn.ID, err)
	}
	for i := 1; i < n; i++ {
		c.AddNode()
	}
	c.WaitReady()
	return c
}

func newCluster(t testing.TB, tune func(*node.Config)) *Cluster {
	c := &Cluster{t: t, dir: t.TempDir(), log: &logWriter{t: t}, Tune: tune}
	t.Cleanup(func() {
		c.Close()
		c.log.mu.Lock()
		c.log.done = true
		c.log.mu.Unlock()
	})
	return c
}

// newTNode names the next member and picks its addresses.
func (c *Cluster) newTNode() *TNode {
	id := fmt.Sprintf("n%d", len(c.Nodes)+1)
	return &TNode{ID: id, Dir: filepath.Join(c.dir, id), RaftAddr: freeAddr(c.t), HTTPAddr: freeAddr(c.t)}
}

// AddNode creates and starts a new member, joining the first live node.
func (c *Cluster) AddNode() *TNode {
	c.t.Helper()
	tn := c.newTNode()
	c.Nodes = append(c.Nodes, tn)
	if err := c.start(tn, c.joinAddrs(tn)); err != nil {
		c.t.Fatalf("start %s: %v", tn.ID, err)
	}
	return tn
}

func (c *Cluster) joinAddrs(self *TNode) []string {
	var out []string
	for _, o := range c.Nodes {
		if o != self && o.alive {
			out = append(out, o.HTTPAddr)
		}
	}
	return out
}

// Config returns the config a node of this cluster starts with.
func (c *Cluster) Config(tn *TNode, join []string) node.Config {
	cfg := node.Config{
		ID: tn.ID, DataDir: tn.Dir, RaftAddr: tn.RaftAddr, HTTPAddr: tn.HTTPAddr, Join: join,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, ApplyTimeout: 5 * time.Second,
		BcryptCost: 4, JoinAttempts: 20, JoinBackoff: 50 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		RaftLogLevel: "warn", RaftLogOut: c.log,
		Feed: node.FeedConfig{Kind: "none"},
		// Small WAL segments, so log compaction really drops entries and
		// lagging nodes catch up by snapshot, as they do in long runs.
		RaftWALSegmentSize: 4 << 10,
	}
	if c.Tune != nil {
		c.Tune(&cfg)
	}
	return cfg
}

func (c *Cluster) start(tn *TNode, join []string) error {
	return c.startWith(tn, c.Config(tn, join))
}

func (c *Cluster) startWith(tn *TNode, cfg node.Config) error {
	hln, err := listen(tn.HTTPAddr)
	if err != nil {
		return err
	}
	rln, err := listen(tn.RaftAddr)
	if err != nil {
		hln.Close()
		return err
	}
	cfg.RaftListener = rln
	if cfg.TLS != nil {
		hln = cfg.TLS.Listener(hln, false)
	}
	if cfg.GossipAddr != "" {
		release(cfg.GossipAddr) // memberlist binds UDP and TCP itself
	}
	n, err := node.New(cfg)
	if err != nil {
		hln.Close()
		rln.Close()
		return err
	}
	tn.Node = n
	tn.api = transport.NewServer(n, nil)
	tn.srv = transport.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, hidden := tn.Hide.Load(r.URL.Path); hidden {
			http.NotFound(w, r)
			return
		}
		tn.api.ServeHTTP(w, r)
	}))
	tn.srv.ErrorLog = log.New(c.log, "http: ", 0) // failed TLS handshakes
	go tn.srv.Serve(hln)
	tn.alive = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.JoinCluster(ctx); err != nil && !n.HasExistingState() {
		c.stop(tn, false)
		return err
	}
	return nil
}

func (c *Cluster) stop(tn *TNode, graceful bool) {
	if !tn.alive {
		return
	}
	tn.alive = false
	tn.srv.Close()
	tn.api.CloseStreams() // hijacked forward streams: srv.Close does not see them
	if graceful {
		tn.Node.Close()
	} else {
		tn.Node.Kill()
	}
}

// Kill stops a node without grace (no leadership hand-over).
func (c *Cluster) Kill(tn *TNode) { c.stop(tn, false) }

// Stop stops a node gracefully.
func (c *Cluster) Stop(tn *TNode) { c.stop(tn, true) }

// Restart starts a stopped node again on its data dir and addresses.
func (c *Cluster) Restart(tn *TNode) {
	c.t.Helper()
	if err := c.start(tn, nil); err != nil {
		c.t.Fatalf("restart %s: %v", tn.ID, err)
	}
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, tn := range c.Nodes {
		c.stop(tn, false)
	}
}

// Live returns the running nodes.
func (c *Cluster) Live() []*TNode {
	var out []*TNode
	for _, tn := range c.Nodes {
		if tn.alive {
			out = append(out, tn)
		}
	}
	return out
}

// Poll calls f every period until it returns nil or timeout passes.
func Poll(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Leader waits until the live nodes agree on one leader and returns it.
func (c *Cluster) Leader() *TNode {
	c.t.Helper()
	var leader *TNode
	Poll(c.t, 10*time.Second, "one agreed leader", func() error {
		leader = nil
		var ids []string
		for _, tn := range c.Live() {
			if tn.Node.IsLeader() {
				leader = tn
				ids = append(ids, tn.ID)
			}
		}
		if len(ids) != 1 {
			return fmt.Errorf("leaders: %v", ids)
		}
		for _, tn := range c.Live() {
			if st := tn.Node.Status(); st.Leader != leader.ID {
				return fmt.Errorf("%s thinks leader is %q", tn.ID, st.Leader)
			}
		}
		return nil
	})
	return leader
}

// Followers returns the live non-leaders.
func (c *Cluster) Followers() []*TNode {
	l := c.Leader()
	var out []*TNode
	for _, tn := range c.Live() {
		if tn != l {
			out = append(out, tn)
		}
	}
	return out
}

// WaitReady waits until every live node is ready to serve.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.Leader()
	Poll(c.t, 10*time.Second, "all nodes ready", func() error {
		for _, tn := range c.Live() {
			if err := tn.Node.Ready(); err != nil {
				return fmt.Errorf("%s: %w", tn.ID, err)
			}
			// Every member's addresses are in the replicated table.
			for _, other := range c.Live() {
				var na fsm.NodeAddrs
				_ = tn.Node.FSM().View(func(v *fsm.View) error { na, _ = v.Node(other.ID); return nil })
				if na.HTTPAddr != other.HTTPAddr {
					return fmt.Errorf("%s has no current record of %s", tn.ID, other.ID)
				}
			}
		}
		return nil
	})
	c.EnsureSame()
}

// EnsureSame waits until every live node has applied the same index and
// holds the same state hash.
func (c *Cluster) EnsureSame() {
	c.t.Helper()
	Poll(c.t, 15*time.Second, "identical state on every node", func() error {
		var hash string
		var idx uint64
		for i, tn := range c.Live() {
			h, ix, err := tn.Node.FSM().Hash()
			if err != nil {
				return err
			}
			if i == 0 {
				hash, idx = h, ix
				continue
			}
			if ix != idx || h != hash {
				return fmt.Errorf("%s at %d/%s vs %s at %d/%s", tn.ID, ix, h, c.Live()[0].ID, idx, hash)
			}
		}
		return nil
	})
}

// Addrs lists the HTTP addresses of the given nodes (all when none given).
func (c *Cluster) Addrs(nodes ...*TNode) []string {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	var out []string
	for _, tn := range nodes {
		out = append(out, tn.HTTPAddr)
	}
	return out
}

// Client returns an API client for the given nodes (all when none given).
func (c *Cluster) Client(nodes ...*TNode) *transport.Client {
	c.t.Helper()
	cl, err := transport.NewClient(transport.ClientConfig{Nodes: c.Addrs(nodes...), Timeout: 3 * time.Second, Deadline: 20 * time.Second, TLS: c.ClientTLS})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Trader registers and logs in a trader through cl.
func Trader(t testing.TB, cl *transport.Client, name string) *transport.Account {
	t.Helper()
	ctx := context.Background()
	if _, err := cl.Register(ctx, transport.RegisterRequest{Username: name, Password: "password-" + name}); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	lr, err := cl.Login(ctx, name, "password-"+name)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return &lr.Account
}

// WaitInstruments polls until cl sees the listed instruments (the first
// leader commits them just after it is elected).
func WaitInstruments(t testing.TB, cl *transport.Client) {
	t.Helper()
	Poll(t, 10*time.Second, "instruments committed", func() error {
		s, err := cl.Symbols(context.Background())
		if err != nil || len(s.Symbols) == 0 {
			return fmt.Errorf("symbols: %v", err)
		}
		return nil
	})
}

func isCode(err error, code string) bool {
	var ae *transport.APIError
	return errors.As(err, &ae) && ae.Code == code
}
