package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// session is the login state kept between client commands, in a file only
// its owner can read.
type session struct {
	Cluster   []string `json:"cluster"`
	Token     string   `json:"token"`
	Username  string   `json:"username"`
	AccountID uint64   `json:"account_id"`
	ExpiresAt string   `json:"expires_at"`
	Node      string   `json:"node"`                // assigned Trading Server's ID
	NodeAddr  string   `json:"node_addr,omitempty"` // its HTTP address
	Preferred string   `json:"preferred,omitempty"` // last node that answered
	TLSCA     string   `json:"tls_ca,omitempty"`    // --tls-ca at login: the default --tls-ca unless --insecure is given
}

// absPath makes a file named at login usable from any directory later;
// "" stays "".
func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// defaultSessionPath is <user config dir>/hats/session.json, or "" when the
// system has no config dir.
func defaultSessionPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "hats", "session.json")
}

// readSession loads the session file; it returns nil, nil when there is none.
func readSession(path string) (*session, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("session file: %w", err)
	}
	var s session
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("session file %s is damaged (%v): remove it and log in again", path, err)
	}
	return &s, nil
}

// writeSession replaces the session file atomically with mode 0600,
// creating its directory with mode 0700.
func writeSession(path string, s *session) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	if err := node.WriteFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("session file: %w", err)
	}
	return nil
}

// removeSession deletes the session file; a missing file is not an error.
func removeSession(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("session file: %w", err)
	}
	return nil
}

// errPlaintextClient is the refusal to talk plain HTTP without --insecure.
const errPlaintextClient = "plaintext HTTP needs --insecure; for a cluster serving TLS pass --tls-ca FILE (or https:// addresses)"

// clientFlags are the flags of `hats trade` and `hats cluster`. They may be
// written before or after the subcommand.
func clientFlags() []cli.Flag {
	return withEnv(
		&cli.StringFlag{Name: "cluster", Usage: "comma-separated HTTP `ADDR`s of any nodes (default: the logged-in session's cluster)"},
		&cli.StringFlag{Name: "session", Value: defaultSessionPath(), Usage: "`FILE` keeping the login session (written with mode 0600)"},
		&cli.BoolFlag{Name: "insecure", Usage: "allow plaintext HTTP"},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM `FILE` of the CA that signed the nodes' certificates; host:port addresses then mean https (default for https:// addresses: the system's roots)"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM `FILE`: a client certificate from the cluster's CA, which join, remove and transfer-leadership need on a TLS cluster (hats cert client)"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM `FILE`: the private key of --tls-cert"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON document on stdout instead of a table"},
		&cli.DurationFlag{Name: "timeout", Value: transport.DefaultDeadline, Usage: "give up after `DURATION`, retries and failover included"},
	)
}

// clientEnv is what a client command needs, read from its flags and the
// session file.
type clientEnv struct {
	out         io.Writer
	errOut      io.Writer
	json        bool
	sessionPath string
	sess        *session // nil when not logged in
	cluster     []string
	fromSession bool // cluster came from the session file
	insecure    bool
	tlsFiles    transport.TLSFiles
	timeout     time.Duration
	cCtx        *cli.Context
}

func newClientEnv(cCtx *cli.Context) (*clientEnv, error) {
	e := &clientEnv{
		out:         cCtx.App.Writer,
		errOut:      cCtx.App.ErrWriter,
		json:        cCtx.Bool("json"),
		sessionPath: cCtx.String("session"),
		insecure:    cCtx.Bool("insecure"),
		tlsFiles:    transport.TLSFiles{CA: cCtx.String("tls-ca"), Cert: cCtx.String("tls-cert"), Key: cCtx.String("tls-key")},
		timeout:     cCtx.Duration("timeout"),
		cCtx:        cCtx,
	}
	if e.timeout <= 0 {
		return nil, usageErrorf(cCtx, "timeout: must be positive, got %s", e.timeout)
	}
	if e.sessionPath != "" {
		s, err := readSession(e.sessionPath)
		if err != nil {
			return nil, err
		}
		e.sess = s
	}
	e.cluster = splitList(cCtx.String("cluster"))
	if len(e.cluster) == 0 && e.sess != nil {
		e.cluster, e.fromSession = e.sess.Cluster, true
	}
	if e.tlsFiles.CA == "" && e.sess != nil && !e.insecure {
		e.tlsFiles.CA = e.sess.TLSCA // the CA the session logged in with, unless plaintext is asked for
	}
	return e, nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// requireSession fails unless a session is logged in.
func (e *clientEnv) requireSession() error {
	if e.sessionPath == "" {
		return usageErrorf(e.cCtx, "session: no config dir; pass --session FILE")
	}
	if e.sess == nil || e.sess.Token == "" {
		return errors.New("not logged in: run hats trade login USER")
	}
	return nil
}

// clientConfig checks the command's cluster addresses against its TLS
// and --insecure flags and returns the client settings they give (no
// token).
func (e *clientEnv) clientConfig() (transport.ClientConfig, error) {
	if len(e.cluster) == 0 {
		return transport.ClientConfig{}, usageErrorf(e.cCtx, "cluster: pass --cluster ADDR[,ADDR...] (or set HATS_CLUSTER)")
	}
	cfg := transport.ClientConfig{
		Nodes:    e.cluster,
		Timeout:  min(transport.DefaultRequestTimeout, e.timeout),
		Deadline: e.timeout,
	}
	if e.tlsFiles != (transport.TLSFiles{}) {
		tc, err := transport.LoadClientTLS(e.tlsFiles)
		if err != nil {
			return transport.ClientConfig{}, err
		}
		cfg.TLS = tc
	}
	for _, a := range e.cluster {
		lower := strings.ToLower(a)
		plain := strings.HasPrefix(lower, "http://") || (cfg.TLS == nil && !strings.HasPrefix(lower, "https://"))
		if plain && !e.insecure {
			return transport.ClientConfig{}, usageErrorf(e.cCtx, errPlaintextClient)
		}
	}
	return cfg, nil
}

// client builds the API client for the command's cluster.
func (e *clientEnv) client() (*transport.Client, error) {
	cfg, err := e.clientConfig()
	if err != nil {
		return nil, err
	}
	return e.clientWith(cfg)
}

// clientWith builds the client from cfg (clientConfig's) with the
// session's token, assignment and preferred node.
func (e *clientEnv) clientWith(cfg transport.ClientConfig) (*transport.Client, error) {
	if e.sess != nil {
		cfg.Token = e.sess.Token
	}
	c, err := transport.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if e.fromSession && e.sess.NodeAddr != "" {
		c.SetAssigned(e.sess.Node, e.sess.NodeAddr)
	}
	if e.fromSession && e.sess.Preferred != "" {
		for _, n := range c.Nodes() {
			if n == e.sess.Preferred {
				_ = c.SetPreferred(n)
			}
		}
	}
	return c, nil
}

// remember saves the node that answered last, so the next command starts
// there. Failing to save it is harmless.
func (e *clientEnv) remember(c *transport.Client) {
	if e.sess == nil || !e.fromSession {
		return
	}
	id, addr := c.Assigned()
	if c.Preferred() == e.sess.Preferred && id == e.sess.Node && addr == e.sess.NodeAddr {
		return
	}
	e.sess.Preferred = c.Preferred()
	if id != "" {
		e.sess.Node, e.sess.NodeAddr = id, addr
	}
	_ = writeSession(e.sessionPath, e.sess)
}

// emit prints v as JSON with --json, else calls human.
func (e *clientEnv) emit(v any, human func(w io.Writer)) error {
	if e.json {
		return printJSON(e.out, v)
	}
	human(e.out)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printKV prints aligned "key  value" lines.
func printKV(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s\t%s\n", kv[i], kv[i+1])
	}
	tw.Flush()
}
