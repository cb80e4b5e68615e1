package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/fsm"
	"github.com/hats-trading/hats/transport"
)

const clusterFlagsNote = "Client flags (--cluster, --session, --insecure, --tls-ca, --tls-cert, --tls-key, --json, --timeout) may come before or after the subcommand; see 'hats cluster --help'."

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "operator commands: status, join, remove, transfer leadership, backup",
		Flags: clientFlags(),
		Subcommands: []*cli.Command{
			{
				Name:        "status",
				Usage:       "show every member: state, indexes and state hash",
				Description: clusterFlagsNote,
				Action:      clusterStatus,
			},
			{
				Name:        "join",
				Usage:       "add a node as a voter (nodes started with --join do this themselves)",
				Description: clusterFlagsNote,
				Flags: withEnv(
					&cli.StringFlag{Name: "id", Usage: "the new node's ID"},
					&cli.StringFlag{Name: "raft-addr", Usage: "the new node's Raft `HOST:PORT`"},
					&cli.StringFlag{Name: "http-addr", Usage: "the new node's API `HOST:PORT`"},
				),
				Action: clusterJoin,
			},
			{
				Name:        "remove",
				Usage:       "remove a member from the cluster",
				ArgsUsage:   "ID",
				Description: clusterFlagsNote,
				Action:      clusterRemove,
			},
			{
				Name:        "backup",
				Usage:       "write a consistent copy of the cluster's state (the leader's, or --node's) to a new file, for hats restore",
				Description: clusterFlagsNote + " Over TLS it needs --tls-cert and --tls-key; over plaintext it only works from the node's own machine. --timeout bounds the whole download: raise it for a large state.",
				Flags: withEnv(
					&cli.StringFlag{Name: "out", Usage: "the backup `FILE` to create (never replaced)"},
					&cli.StringFlag{Name: "node", Usage: "back up this node `ID` instead of the leader"},
				),
				Action: clusterBackup,
			},
			{
				Name:        "transfer-leadership",
				Usage:       "hand leadership to another voter (by default the most up-to-date one)",
				ArgsUsage:   "[ID]",
				Description: clusterFlagsNote,
				Action:      clusterTransfer,
			},
		},
	}
}

func clusterStatus(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	st, err := c.ClusterStatus(cCtx.Context)
	if err != nil {
		return err
	}
	return e.emit(st, func(w io.Writer) { printClusterStatus(w, st) })
}

// printClusterStatus prints the leader and term, then one row per member.
func printClusterStatus(w io.Writer, st *transport.ClusterStatus) {
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	me := st.MarketEngine
	if me == "" {
		me = "(none)"
	}
	fmt.Fprintf(w, "leader %s  term %d  market engine %s", leader, st.Term, me)
	// State-machine rules: what the leader's state is at and, during a
	// rolling upgrade, what holds a raise back.
	pending := ""
	for _, n := range st.Nodes {
		if n.ID == st.Leader && n.Rules > 0 {
			fmt.Fprintf(w, "  rules %d (this release up to %d)", n.Rules, n.MaxRules)
			pending = n.RulesPending
		}
	}
	fmt.Fprintln(w)
	if pending != "" {
		fmt.Fprintf(w, "%s\n", pending)
	}
	for _, n := range st.Nodes {
		if es := n.MarketEngine; es != nil && es.Running {
			stale := ""
			if es.Stale {
				stale = "  STALE"
			}
			fmt.Fprintf(w, "feed %s  last tick #%d at %s  errors %d  rejected rows %d%s\n",
				es.Feed, es.LastTickSeq, es.LastTick.Format("15:04:05.000"), es.Errors, es.RejectedRow, stale)
		}
	}
	fmt.Fprintln(w)
	withErr := false
	for _, n := range st.Nodes {
		withErr = withErr || n.Error != ""
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "ID\tSTATE\tVOTER\tROLES\tSESSIONS\tGOSSIP\tRAFT ADDR\tHTTP ADDR\tAPPLIED\tCOMMIT\tHASH")
	if withErr {
		fmt.Fprint(tw, "\tERROR")
	}
	fmt.Fprintln(tw)
	for _, n := range st.Nodes {
		voter := "no"
		if n.Voter {
			voter = "yes"
		}
		hash := n.StateHash
		if len(hash) > 12 {
			hash = hash[:12]
		}
		if hash == "" {
			hash = "-"
		}
		roles := strings.Join(n.Roles, ",")
		if roles == "" {
			roles = "-"
		}
		gossip := n.Gossip
		if gossip == "" {
			gossip = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s", n.ID, n.State, voter, roles, n.Sessions, gossip, n.RaftAddr, n.HTTPAddr, n.AppliedIndex, n.CommitIndex, hash)
		if withErr {
			fmt.Fprintf(tw, "\t%s", oneLine(n.Error))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func clusterJoin(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	req := transport.JoinRequest{ID: cCtx.String("id"), RaftAddr: cCtx.String("raft-addr"), HTTPAddr: cCtx.String("http-addr")}
	for _, f := range []struct{ name, v string }{{"id", req.ID}, {"raft-addr", req.RaftAddr}, {"http-addr", req.HTTPAddr}} {
		if f.v == "" {
			return usageErrorf(cCtx, "%s: --%s is required", f.name, f.name)
		}
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.Join(cCtx.Context, req); err != nil {
		return err
	}
	return e.emit(map[string]any{"joined": req}, func(w io.Writer) {
		fmt.Fprintf(w, "joined %s (raft %s, http %s)\n", req.ID, req.RaftAddr, req.HTTPAddr)
	})
}

func clusterRemove(cCtx *cli.Context) error {
	if err := exactArgs(cCtx, "ID"); err != nil {
		return err
	}
	id := cCtx.Args().First()
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.Remove(cCtx.Context, id); err != nil {
		return err
	}
	return e.emit(map[string]string{"removed": id}, func(w io.Writer) {
		fmt.Fprintf(w, "removed %s\n", id)
	})
}

// clusterBackup downloads a node's state into --out (through a temporary
// file, fsynced and checked page by page before it takes the name).
func clusterBackup(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	out := cCtx.String("out")
	if out == "" {
		return usageErrorf(cCtx, "out: pass --out FILE")
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("--out %s exists; not replacing it", out)
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	cfg, err := e.clientConfig()
	if err != nil {
		return err
	}
	cfg.Timeout = e.timeout // a backup's body may take that long
	c, err := e.clientWith(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cCtx.Context, e.timeout)
	defer cancel()
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		return err
	}
	want := cCtx.String("node")
	if want == "" {
		want = st.Leader
	}
	addr := ""
	for _, n := range st.Nodes {
		if n.ID == want {
			addr = n.HTTPAddr
		}
	}
	if addr == "" {
		return fmt.Errorf("no node %q to back up (leader %q)", want, st.Leader)
	}
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".partial-*")
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link below, only the name goes
	got, err := c.Backup(ctx, addr, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var info fsm.BackupInfo
	if err == nil {
		info, err = fsm.InspectBackup(tmp)
	}
	if err == nil && (info.AppliedIndex == 0 || info.AppliedIndex != got.Index) {
		err = fmt.Errorf("backup from %s claims index %d but holds state at %d", got.Node, got.Index, info.AppliedIndex)
	}
	if err == nil {
		// A link, not a rename: it fails instead of replacing a file
		// that appeared at --out meanwhile.
		if err = os.Link(tmp, out); err != nil {
			err = fmt.Errorf("--out: %w", err)
		}
	}
	if err != nil {
		return err
	}
	if d, derr := os.Open(filepath.Dir(out)); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	view := map[string]any{"file": out, "node": got.Node, "applied_index": info.AppliedIndex,
		"accounts": info.Accounts, "bytes": info.Bytes}
	return e.emit(view, func(w io.Writer) {
		fmt.Fprintf(w, "backup of %s at index %d: %d accounts, %d bytes in %s\n", got.Node, info.AppliedIndex, info.Accounts, info.Bytes, out)
	})
}

func clusterTransfer(cCtx *cli.Context) error {
	if cCtx.NArg() > 1 {
		return usageErrorf(cCtx, "transfer-leadership takes at most one ID, got %d arguments", cCtx.NArg())
	}
	id := cCtx.Args().First()
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.TransferLeadership(cCtx.Context, id); err != nil {
		return err
	}
	to := id
	if to == "" {
		to = "(chosen by Raft)"
	}
	return e.emit(map[string]string{"transferred_to": id}, func(w io.Writer) {
		fmt.Fprintf(w, "leadership transferred to %s\n", to)
	})
}
