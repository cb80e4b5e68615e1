package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/hats-trading/hats/transport"
)

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "follow live quotes and trades (and your own orders with --orders)",
		ArgsUsage: "[SYMBOL...]",
		Description: "Streams events as they happen. If the serving node dies, the stream resumes from another node " +
			"where it stopped: no event is lost or repeated. " + clientFlagsNote,
		Flags: withEnv(
			&cli.IntFlag{Name: "count", Usage: "exit after `N` events (0: until Ctrl-C)"},
			&cli.BoolFlag{Name: "orders", Usage: "also stream changes of your own orders (needs a login)"},
			&cli.StringFlag{Name: "cursor", Usage: "resume from a `CURSOR` printed by an earlier watch (--json shows it)"},
		),
		Action: tradeWatch,
	}
}

func tradeWatch(cCtx *cli.Context) error {
	var symbols []string
	for _, a := range cCtx.Args().Slice() {
		sym, err := argSymbol(a)
		if err != nil {
			return err
		}
		symbols = append(symbols, sym)
	}
	orders := cCtx.Bool("orders")
	if len(symbols) == 0 && !orders {
		return fmt.Errorf("symbol: name at least one SYMBOL, or pass --orders")
	}
	count := cCtx.Int("count")
	if count < 0 {
		return fmt.Errorf("--count: must be 0 or more, got %d", count)
	}
	e, c, err := marketClient(cCtx, orders)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cCtx.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	seen := 0
	p := newPainter(e.out)
	err = c.Watch(ctx, transport.WatchRequest{Symbols: symbols, Orders: orders, Cursor: cCtx.String("cursor")}, func(ev transport.StreamEvent) error {
		if e.json {
			b, _ := json.Marshal(ev)
			fmt.Fprintln(e.out, string(b))
		} else {
			printEvent(e.out, p, ev)
		}
		seen++
		if count > 0 && seen >= count {
			return transport.ErrStopWatch
		}
		return nil
	})
	e.remember(c)
	return err
}

func printEvent(w io.Writer, p painter, ev transport.StreamEvent) {
	ts := shortTime(ev.Time)
	switch ev.Type {
	case "trade":
		fmt.Fprintf(w, "%s  %-6s trade  #%-6d %8s x %-6d taker %s\n", ts, ev.Symbol, ev.Seq, ev.Price, ev.Quantity, p.side(ev.TakerSide))
	case "quote":
		stale := ""
		if ev.Stale {
			stale = "  (stale)"
		}
		fmt.Fprintf(w, "%s  %-6s quote  bid %8s x %-6d ask %8s x %-6d last %8s%s\n", ts, ev.Symbol, dash(ev.Bid), ev.BidSize, dash(ev.Ask), ev.AskSize, dash(ev.Last), stale)
	case "order":
		o := ev.Order
		fmt.Fprintf(w, "order  #%d %s %s %s %d @ %s  filled %d  %s\n", o.OrderID, o.Symbol, p.side(o.Side), o.Type, o.Quantity, dash(o.LimitPrice), o.FilledQuantity, o.Status)
	}
}
