package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/node"
	"github.com/hats-trading/hats/transport"
)

// demoPorts is remembered in the data dir so a demo restarted on the same
// --data-dir keeps its addresses (Raft membership records them).
type demoPorts struct {
	Raft   []int `json:"raft"`
	HTTP   []int `json:"http"`
	Gossip []int `json:"gossip"`
}

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local 3-node cluster on loopback until Ctrl-C",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "keep the cluster's data here (default: a temporary dir removed on exit)", EnvVars: []string{"HATS_DATA_DIR"}},
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "number of nodes (1, 3 or 5)", EnvVars: []string{"HATS_NODES"}},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error", EnvVars: []string{"HATS_LOG_LEVEL"}},
			&cli.BoolFlag{Name: "tls", Usage: "run the nodes with TLS: a CA, node and operator certificates and a gossip key are made under DATA_DIR/certs (kept with --data-dir)", EnvVars: []string{"HATS_TLS"}},
		},
		Action: func(c *cli.Context) error {
			tuneGC()
			count := c.Int("nodes")
			if count != 1 && count != 3 && count != 5 {
				return fmt.Errorf("--nodes must be 1, 3 or 5, got %d", count)
			}
			dir := c.String("data-dir")
			if dir == "" {
				tmp, err := os.MkdirTemp("", "hats-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			ports, err := loadOrPickPorts(dir, count)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			logger := newLogger(c.String("log-level"), os.Stderr)
			var nodes []*runningNode
			defer func() {
				for i := len(nodes) - 1; i >= 0; i-- {
					_ = nodes[i].stop()
				}
			}()
			var httpAddrs []string
			for i := 0; i < count; i++ {
				httpAddrs = append(httpAddrs, fmt.Sprintf("127.0.0.1:%d", ports.HTTP[i]))
			}
			var dt *demoTLSFiles
			if c.Bool("tls") {
				if dt, err = makeDemoTLS(filepath.Join(dir, "certs"), count); err != nil {
					return fmt.Errorf("--tls: %w", err)
				}
			}
			for i := 0; i < count; i++ {
				cfg := node.Config{
					ID:         fmt.Sprintf("n%d", i+1),
					DataDir:    filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
					RaftAddr:   fmt.Sprintf("127.0.0.1:%d", ports.Raft[i]),
					HTTPAddr:   httpAddrs[i],
					GossipAddr: fmt.Sprintf("127.0.0.1:%d", ports.Gossip[i]),
					Logger:     logger, RaftLogLevel: raftLogLevel(c.String("log-level")),
					Feed: node.FeedConfig{Kind: "sim", MMSize: 100, MMSpreadBps: 20},
				}
				if i > 0 {
					cfg.Join = []string{httpAddrs[0]}
				}
				if dt != nil {
					if cfg.TLS, err = transport.LoadNodeTLS(dt.node[i]); err != nil {
						return err
					}
					cfg.GossipKey = dt.gossipKey
				}
				rn, err := startNode(ctx, cfg, cfg.RaftAddr, cfg.HTTPAddr)
				if err != nil {
					return fmt.Errorf("start %s: %w", cfg.ID, err)
				}
				nodes = append(nodes, rn)
			}
			if err := waitReady(ctx, nodes, 15*time.Second); err != nil {
				return err
			}
			security := "  export HATS_INSECURE=1\n"
			if dt != nil {
				security = fmt.Sprintf("  export HATS_TLS_CA=%s\n  # operator commands (transfer-leadership, remove) also take:\n  #   --tls-cert %s --tls-key %s\n", dt.ca, dt.operatorCert, dt.operatorKey)
			}
			fmt.Printf(`HATS demo: %d nodes on loopback, data in %s

  export HATS_CLUSTER=%s
%s
In another terminal, after the exports:
  echo 'correct-horse' | hats trade register alice --password-stdin --name "Alice Doe"
  echo 'correct-horse' | hats trade login alice --password-stdin
  hats trade deposit 1000.00
  hats trade account
  hats cluster status

Press Ctrl-C to stop the cluster.
`, count, dir, strings.Join(httpAddrs, ","), security)
			select {
			case <-ctx.Done():
			case err := <-firstServeErr(nodes):
				return err
			}
			fmt.Println("\nstopping the demo cluster")
			return nil
		},
	}
}

// demoTLSFiles are the files `hats demo --tls` runs with.
type demoTLSFiles struct {
	ca                        string
	node                      []transport.TLSFiles
	operatorCert, operatorKey string
	gossipKey                 []byte
}

// makeDemoTLS makes (or, on a kept data dir, reuses) a CA, a certificate
// per node for 127.0.0.1, an operator certificate and a gossip key in dir.
func makeDemoTLS(dir string, count int) (*demoTLSFiles, error) {
	dt := &demoTLSFiles{ca: filepath.Join(dir, "ca.crt"), operatorCert: filepath.Join(dir, "operator.crt"), operatorKey: filepath.Join(dir, "operator.key")}
	nodeName := func(i int) string { return fmt.Sprintf("n%d", i+1) }
	if _, err := os.Stat(dt.ca); errors.Is(err, os.ErrNotExist) {
		if err := issueDemoTLS(dir, count, nodeName); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	for i := range count {
		dt.node = append(dt.node, transport.TLSFiles{CA: dt.ca, Cert: filepath.Join(dir, nodeName(i)+".crt"), Key: filepath.Join(dir, nodeName(i)+".key")})
	}
	var err error
	dt.gossipKey, err = readGossipKey(filepath.Join(dir, "gossip.key"))
	return dt, err
}

// issueDemoTLS writes what hats cert ca, node (per node), client and
// gossip-key would, valid for a year.
func issueDemoTLS(dir string, count int, nodeName func(int) string) error {
	year := 365 * day
	caCert, caKey, err := transport.NewCA("HATS demo CA", time.Now(), year)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, _, err := writePair(dir, "ca", caCert, caKey); err != nil {
		return err
	}
	for i := range count {
		if _, _, err := issuePair(dir, nodeName(i), caCert, caKey, transport.CertNode, []string{"127.0.0.1", "localhost"}, year); err != nil {
			return err
		}
	}
	if _, _, err := issuePair(dir, "operator", caCert, caKey, transport.CertClient, nil, year); err != nil {
		return err
	}
	key, err := newGossipKeyFile()
	if err != nil {
		return err
	}
	return writeNew(filepath.Join(dir, "gossip.key"), key, 0o600)
}

func firstServeErr(nodes []*runningNode) <-chan error {
	out := make(chan error, 1)
	for _, n := range nodes {
		go func(n *runningNode) {
			if err, ok := <-n.serveErr; ok {
				select {
				case out <- err:
				default:
				}
			}
		}(n)
	}
	return out
}

// waitReady polls until every node knows the leader and holds the cluster's
// records.
func waitReady(ctx context.Context, nodes []*runningNode, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var err error
		for _, n := range nodes {
			if err = n.node.Ready(); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready after %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func loadOrPickPorts(dir string, count int) (*demoPorts, error) {
	p := filepath.Join(dir, "demo-ports.json")
	var dp demoPorts
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &dp); err != nil || len(dp.Raft) != count || len(dp.HTTP) != count || len(dp.Gossip) != count {
			return nil, fmt.Errorf("%s does not describe a %d-node demo; use another --data-dir", p, count)
		}
		return &dp, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for i := 0; i < count; i++ {
		for _, dst := range []*[]int{&dp.Raft, &dp.HTTP, &dp.Gossip} {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			*dst = append(*dst, port)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(dp)
	return &dp, os.WriteFile(p, b, 0o600)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
