package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// errPlaintext is returned when a server is asked to run without TLS and
// without --insecure.
var errPlaintext = errors.New("plaintext HTTP and Raft need --insecure; for TLS give --tls-cert, --tls-key and --tls-ca (hats cert makes them)")

func nodeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "id", Usage: "unique node ID (stable across restarts)", EnvVars: []string{"HATS_ID"}},
		&cli.StringFlag{Name: "data-dir", Usage: "directory for the Raft log, snapshots and state", EnvVars: []string{"HATS_DATA_DIR"}},
		&cli.StringFlag{Name: "raft-addr", Usage: "HOST:PORT for Raft traffic (bound and advertised)", EnvVars: []string{"HATS_RAFT_ADDR"}},
		&cli.StringFlag{Name: "http-addr", Usage: "HOST:PORT for the client API (bound and advertised)", EnvVars: []string{"HATS_HTTP_ADDR"}},
		&cli.StringFlag{Name: "gossip-addr", Usage: "HOST:PORT for the gossip ring that gives every node a live view of all Trading Servers (default: none; assignment then uses Raft membership)", EnvVars: []string{"HATS_GOSSIP_ADDR"}},
		&cli.StringFlag{Name: "raft-advertise", Usage: "Raft address peers dial, when it differs from --raft-addr", EnvVars: []string{"HATS_RAFT_ADVERTISE"}},
		&cli.StringFlag{Name: "http-advertise", Usage: "API address peers and clients use, when it differs from --http-addr", EnvVars: []string{"HATS_HTTP_ADVERTISE"}},
		&cli.StringSliceFlag{Name: "join", Usage: "HTTP address(es) of any existing member", EnvVars: []string{"HATS_JOIN"}},
		// Replaced by `hats restore`; kept hidden so that a command line
		// still carrying it fails with a pointer instead of a bare
		// "flag provided but not defined".
		&cli.StringFlag{Name: "restore", Hidden: true, EnvVars: []string{"HATS_RESTORE"}},
		&cli.BoolFlag{Name: "insecure", Usage: "allow plaintext HTTP and Raft", EnvVars: []string{"HATS_INSECURE"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM `FILE`: this node's certificate, naming the hosts of its --http-addr and --raft-addr (hats cert node); with --tls-key and --tls-ca, the API serves https and Raft runs mutual TLS", EnvVars: []string{"HATS_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM `FILE`: the private key of --tls-cert", EnvVars: []string{"HATS_TLS_KEY"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM `FILE`: the CA that signs every node's (and operator's) certificate", EnvVars: []string{"HATS_TLS_CA"}},
		&cli.StringFlag{Name: "tls-crl", Usage: "PEM `FILE`: the CA's certificate revocation list (hats cert revoke); certificates on it are refused, reloaded on SIGHUP", EnvVars: []string{"HATS_TLS_CRL"}},
		&cli.StringFlag{Name: "gossip-key-file", Usage: "`FILE` holding a base64 AES key (16, 24 or 32 bytes; hats cert gossip-key) that encrypts and authenticates the gossip ring; the same on every node", EnvVars: []string{"HATS_GOSSIP_KEY_FILE"}},
		&cli.DurationFlag{Name: "heartbeat-timeout", Value: node.DefaultHeartbeatTimeout, Usage: "Raft heartbeat timeout (failure detection)", EnvVars: []string{"HATS_HEARTBEAT_TIMEOUT"}},
		&cli.DurationFlag{Name: "election-timeout", Value: node.DefaultElectionTimeout, Usage: "Raft election timeout", EnvVars: []string{"HATS_ELECTION_TIMEOUT"}},
		&cli.Uint64Flag{Name: "snapshot-threshold", Value: node.DefaultSnapshotThreshold, Usage: "log entries between snapshots", EnvVars: []string{"HATS_SNAPSHOT_THRESHOLD"}},
		&cli.StringFlag{Name: "raft-log-store", Usage: "Raft log format for a new data dir: wal (default; one fsync per append) or boltdb; an existing data dir keeps the format it holds", EnvVars: []string{"HATS_RAFT_LOG_STORE"}},
		&cli.BoolFlag{Name: "raft-early-append", Value: true, Usage: "the leader sends new Raft entries to caught-up followers while it writes them to its own log instead of after (false: hashicorp/raft's own order)", EnvVars: []string{"HATS_RAFT_EARLY_APPEND"}},
		&cli.DurationFlag{Name: "state-commit-interval", Value: fsm.DefaultCommitInterval, Usage: "how long applied commands stay in memory before a background checkpoint commits and fsyncs them to the state file (they are in the fsynced Raft log meanwhile; 0: wait for a checkpoint after every batch)", EnvVars: []string{"HATS_STATE_COMMIT_INTERVAL"}},
		&cli.IntFlag{Name: "join-attempts", Value: 10, Usage: "join rounds before giving up", EnvVars: []string{"HATS_JOIN_ATTEMPTS"}},
		&cli.DurationFlag{Name: "session-ttl", Value: node.DefaultSessionTTL, Usage: "lifetime of a login session", EnvVars: []string{"HATS_SESSION_TTL"}},
		&cli.StringFlag{Name: "feed", Value: "sim", Usage: "Market Engine price feed: sim, none, http(s)://URL or file:PATH", EnvVars: []string{"HATS_FEED"}},
		&cli.DurationFlag{Name: "feed-interval", Value: time.Second, Usage: "how often the Market Engine commits a tick", EnvVars: []string{"HATS_FEED_INTERVAL"}},
		&cli.Float64Flag{Name: "feed-speed", Value: 60, Usage: "file feed: market seconds replayed per wall-clock second", EnvVars: []string{"HATS_FEED_SPEED"}},
		&cli.Float64Flag{Name: "feed-band-pct", Value: 20, Usage: "reject feed prices further than this percentage from the reference", EnvVars: []string{"HATS_FEED_BAND_PCT"}},
		&cli.Int64Flag{Name: "mm-spread-bps", Value: 20, Usage: "market maker spread around the reference price, in basis points", EnvVars: []string{"HATS_MM_SPREAD_BPS"}},
		&cli.Int64Flag{Name: "mm-size", Value: 100, Usage: "market maker quote size in shares (0 turns market making off)", EnvVars: []string{"HATS_MM_SIZE"}},
		&cli.StringFlag{Name: "instruments", Usage: "CSV file (symbol,name,ref_price) a new cluster starts with instead of the default universe", EnvVars: []string{"HATS_INSTRUMENTS"}},
		&cli.StringFlag{Name: "pprof-addr", Usage: "HOST:PORT to serve Go profiles (/debug/pprof/) on, for performance work; keep it on loopback (default: off)", EnvVars: []string{"HATS_PPROF_ADDR"}},
		&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error", EnvVars: []string{"HATS_LOG_LEVEL"}},
	}
}

// feedConfig builds the Market Engine settings from the feed flags.
func feedConfig(c *cli.Context) (node.FeedConfig, error) {
	kind, loc, err := node.ParseFeed(c.String("feed"))
	if err != nil {
		return node.FeedConfig{}, err
	}
	if c.Int64("mm-size") < 0 || c.Int64("mm-spread-bps") <= 0 {
		return node.FeedConfig{}, fmt.Errorf("--mm-size must be >= 0 and --mm-spread-bps > 0")
	}
	fc := node.FeedConfig{
		Kind: kind, Interval: c.Duration("feed-interval"), Speed: c.Float64("feed-speed"),
		BandPct: c.Float64("feed-band-pct"), MMSpreadBps: c.Int64("mm-spread-bps"), MMSize: c.Int64("mm-size"),
	}
	if kind == "http" {
		fc.URL = loc
	} else {
		fc.Path = loc
	}
	return fc, nil
}

// loadInstruments reads --instruments, when given.
func loadInstruments(path string) ([]market.Instrument, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--instruments: %w", err)
	}
	defer f.Close()
	list, err := market.ParseInstrumentsCSV(f)
	if err != nil {
		return nil, fmt.Errorf("--instruments %s: %w", path, err)
	}
	for _, in := range list {
		if err := fsm.ValidateSymbol(in.Symbol); err != nil {
			return nil, fmt.Errorf("--instruments %s: %w", path, err)
		}
	}
	return list, nil
}

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run a cluster member (bootstraps a new cluster unless --join is given or the data dir has state)",
		Flags: nodeFlags(),
		Action: func(c *cli.Context) error {
			if c.String("restore") != "" {
				return usageErrorf(c, "restore: hats node no longer takes --restore; run hats restore --from FILE once with this node's --id, --data-dir and --raft-addr, then start the node without it")
			}
			nodeTLS, err := nodeTLSFlags(c)
			if err != nil {
				return err
			}
			gossipKey, err := readGossipKey(c.String("gossip-key-file"))
			if err != nil {
				return err
			}
			if nodeTLS != nil && gossipKey == nil && c.String("gossip-addr") != "" {
				return errors.New("--gossip-addr with TLS needs --gossip-key-file: an unkeyed gossip ring would let anyone who reaches it pose as a member (hats cert gossip-key makes a key)")
			}
			join, err := joinAddrs(splitAddrs(c.StringSlice("join")), nodeTLS != nil)
			if err != nil {
				return err
			}
			for _, f := range []string{"id", "data-dir", "raft-addr", "http-addr"} {
				if c.String(f) == "" {
					return fmt.Errorf("--%s is required", f)
				}
			}
			instruments, err := loadInstruments(c.String("instruments"))
			if err != nil {
				return err
			}
			feed, err := feedConfig(c)
			if err != nil {
				return err
			}
			logger := newLogger(c.String("log-level"), os.Stderr)
			cfg := node.Config{
				Feed: feed,
				ID:   c.String("id"), DataDir: c.String("data-dir"),
				RaftAddr:         firstNonEmpty(c.String("raft-advertise"), c.String("raft-addr")),
				HTTPAddr:         firstNonEmpty(c.String("http-advertise"), c.String("http-addr")),
				GossipAddr:       c.String("gossip-addr"),
				Join:             join,
				HeartbeatTimeout: c.Duration("heartbeat-timeout"), ElectionTimeout: c.Duration("election-timeout"),
				SnapshotThreshold: c.Uint64("snapshot-threshold"), JoinAttempts: c.Int("join-attempts"),
				StateCommitInterval: stateCommitInterval(c.Duration("state-commit-interval")), RaftLogStore: c.String("raft-log-store"),
				NoEarlyAppend: !c.Bool("raft-early-append"),
				SessionTTL:    c.Duration("session-ttl"), Logger: logger, Instruments: instruments, RaftLogLevel: raftLogLevel(c.String("log-level")),
				TLS: nodeTLS, GossipKey: gossipKey,
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			tuneGC()
			if addr := c.String("pprof-addr"); addr != "" {
				closePprof, err := servePprof(addr)
				if err != nil {
					return err
				}
				defer closePprof()
			}
			hup := make(chan os.Signal, 1) // before the start, whose join may take a while
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			rn, err := startNode(ctx, cfg, c.String("raft-addr"), c.String("http-addr"))
			if err != nil {
				return err
			}
			mode := "plaintext"
			if nodeTLS != nil {
				mode = "TLS"
			}
			fmt.Fprintf(os.Stderr, "hats node %s serving API on %s, Raft on %s (%s)\n", cfg.ID, cfg.HTTPAddr, cfg.RaftAddr, mode)
			for {
				select {
				case <-ctx.Done():
					return rn.stop()
				case err := <-rn.serveErr:
					rn.stop()
					return fmt.Errorf("API server: %w", err)
				case <-hup:
					reloadTLS(nodeTLS, logger)
				}
			}
		},
	}
}

// nodeTLSFlags loads --tls-cert, --tls-key and --tls-ca when any is given
// (nil when none is); plaintext then needs --insecure, and TLS refuses it.
func nodeTLSFlags(c *cli.Context) (*transport.NodeTLS, error) {
	files := transport.TLSFiles{Cert: c.String("tls-cert"), Key: c.String("tls-key"), CA: c.String("tls-ca")}
	if files == (transport.TLSFiles{}) {
		if c.String("tls-crl") != "" {
			return nil, errors.New("--tls-crl needs TLS: give it with --tls-cert, --tls-key and --tls-ca")
		}
		if !c.Bool("insecure") {
			return nil, errPlaintext
		}
		return nil, nil
	}
	files.CRL = c.String("tls-crl")
	if c.Bool("insecure") {
		return nil, errors.New("--insecure and --tls-cert/--tls-key/--tls-ca exclude each other: pick plaintext or TLS")
	}
	return transport.LoadNodeTLS(files)
}

// reloadTLS re-reads the node's certificate, key, CA and revocation list
// (on SIGHUP): new connections use them, open ones keep what they were
// set up with (the admin endpoints check the new list per request).
func reloadTLS(t *transport.NodeTLS, log *slog.Logger) {
	if t == nil {
		return
	}
	if err := t.Reload(); errors.Is(err, transport.ErrOwnCertRevoked) {
		log.Error("TLS reloaded, and this node's own certificate is on the new revocation list: peers that hold it refuse this node; give it a new certificate", "err", err)
		return
	} else if err != nil {
		log.Error("TLS reload failed; keeping the old certificate, CA and revocation list", "err", err)
		return
	}
	log.Info("TLS certificate, key, CA and revocation list reloaded")
}

// readGossipKey reads --gossip-key-file: a base64 AES key of 16, 24 or 32
// bytes. An empty path means no key.
func readGossipKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file %s: not base64: %w", path, err)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("--gossip-key-file %s: key is %d bytes, want 16, 24 or 32", path, n)
	}
	return key, nil
}

// joinAddrs accepts --join members as HOST:PORT or as http(s):// URLs of
// the node's own kind (nodes call each other the way they serve).
func joinAddrs(addrs []string, tls bool) ([]string, error) {
	want := "http"
	if tls {
		want = "https"
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		hostPort := a
		if strings.Contains(a, "://") {
			u, err := transport.NormalizeAddr(a)
			if err != nil {
				return nil, fmt.Errorf("--join: %w", err)
			}
			scheme, rest, _ := strings.Cut(u, "://")
			if scheme != want {
				return nil, fmt.Errorf("--join %s: this node runs %s, so its members are %s:// addresses", a, want, want)
			}
			hostPort = rest
		}
		if _, _, err := net.SplitHostPort(hostPort); err != nil || strings.ContainsAny(hostPort, "/?#@") {
			return nil, fmt.Errorf("--join %s: want HOST:PORT or %s://HOST:PORT", a, want)
		}
		out = append(out, hostPort)
	}
	return out, nil
}

// runningNode is a node plus its HTTP server.
type runningNode struct {
	node     *node.Node
	srv      *http.Server
	serveErr chan error
}

// startNode binds the listeners, starts the node and its API, and joins the
// cluster when asked. A fresh node whose join fails is shut down.
func startNode(ctx context.Context, cfg node.Config, raftBind, httpBind string) (*runningNode, error) {
	hln, err := net.Listen("tcp", httpBind)
	if err != nil {
		return nil, fmt.Errorf("--http-addr %s: %w", httpBind, err)
	}
	rln, err := net.Listen("tcp", raftBind)
	if err != nil {
		hln.Close()
		return nil, fmt.Errorf("--raft-addr %s: %w", raftBind, err)
	}
	cfg.RaftListener = rln
	if cfg.TLS != nil {
		hln = cfg.TLS.Listener(hln, false)
	}
	n, err := node.New(cfg)
	if err != nil {
		hln.Close()
		rln.Close()
		return nil, err
	}
	api := transport.NewServer(n, cfg.Logger.With("component", "http", "node", cfg.ID))
	rn := &runningNode{node: n, srv: transport.NewHTTPServer(api), serveErr: make(chan error, 1)}
	go func() {
		if err := rn.srv.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			rn.serveErr <- err
		}
	}()
	if err := n.JoinCluster(ctx); err != nil {
		if !n.HasExistingState() {
			rn.stop()
			return nil, err
		}
		cfg.Logger.Warn("rejoin failed; continuing with existing membership", "err", err)
	}
	return rn, nil
}

// stop hands leadership over (inside node.Close), then stops the API.
func (rn *runningNode) stop() error {
	err := rn.node.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = rn.srv.Shutdown(sctx)
	return err
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// raftLogLevel keeps the Raft library one level quieter than HATS at the
// default: its warnings (a follower rejecting an append it is about to get,
// an election with no peers yet) are routine during start and failover.
func raftLogLevel(level string) string {
	if level == "" || level == "warn" {
		return "error"
	}
	return level
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// splitAddrs accepts repeated flags and comma-separated lists alike.
func splitAddrs(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// stateCommitInterval maps the flag (0: commit every batch) onto
// node.Config (0: default, negative: every batch).
func stateCommitInterval(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// servePprof serves net/http/pprof's handlers on their own listener, so
// profiles are never reachable through the client API.
func servePprof(addr string) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// nodeGCPercent is the garbage collector's target for node processes when
// GOGC is not set: a node's live heap is small next to the machine's
// memory, and collecting less often leaves more CPU for applying orders
// (about 7% more throughput under full load, docs/performance.md).
const nodeGCPercent = 400

// tuneGC applies nodeGCPercent unless the operator set GOGC.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(nodeGCPercent)
	}
}
