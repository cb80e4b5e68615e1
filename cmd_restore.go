package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/node"
)

// restoreCommand is `hats restore`: the offline step that turns a backup
// into the data dir of a new cluster's first node. It is a command of its
// own, run once by hand, so that nothing on a node's service command line
// can start a second cluster from an old backup (node/restore.go).
func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "make an empty data dir the first node of a NEW cluster holding a backup (hats cluster backup); then start that node with hats node and join others to it",
		Description: "Run once, before the node's first start, with the --id, --data-dir and Raft address the node will run with " +
			"(the same HATS_* variables as hats node). It writes nothing into a data dir that holds Raft or state data. " +
			"The new cluster keeps every trader, password, order, balance and client order ID of the backup; it gets a new " +
			"cluster key and records its members anew as they start and join.",
		Flags: withEnv(
			&cli.StringFlag{Name: "from", Usage: "the backup `FILE` (hats cluster backup --out)"},
			&cli.StringFlag{Name: "id", Usage: "the node's --id"},
			&cli.StringFlag{Name: "data-dir", Usage: "the node's --data-dir (empty or missing)"},
			&cli.StringFlag{Name: "raft-addr", Usage: "the node's --raft-addr (HOST:PORT)"},
			&cli.StringFlag{Name: "raft-advertise", Usage: "the node's --raft-advertise, when it differs from --raft-addr"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		),
		Action: runRestore,
	}
}

func runRestore(c *cli.Context) error {
	if err := exactArgs(c); err != nil {
		return err
	}
	if c.String("from") == "" {
		return usageErrorf(c, "from: pass --from FILE (a backup written by hats cluster backup)")
	}
	raftAddr := firstNonEmpty(c.String("raft-advertise"), c.String("raft-addr"))
	if raftAddr == "" {
		return usageErrorf(c, "raft-addr: pass the --raft-addr the node will run with")
	}
	info, err := node.Restore(node.RestoreConfig{
		Backup: c.String("from"), ID: c.String("id"), DataDir: c.String("data-dir"), RaftAddr: raftAddr,
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]any{
			"node": c.String("id"), "data_dir": c.String("data-dir"), "raft_addr": raftAddr,
			"applied_index": info.AppliedIndex, "accounts": info.Accounts, "bytes": info.Bytes,
		})
	}
	printRestored(c.App.Writer, c.String("id"), c.String("data-dir"), info.AppliedIndex, info.Accounts)
	return nil
}

func printRestored(w io.Writer, id, dir string, index uint64, accounts int) {
	fmt.Fprintf(w, "restored a backup at index %d (%d accounts) into %s as node %s of a new cluster\n", index, accounts, dir, id)
	fmt.Fprintf(w, "next: start it with hats node --id %s --data-dir %s and its usual addresses, without --join; then join the other nodes to it\n", id, dir)
}
