package main

// `hats trade` exchange commands: instruments, share transfers, orders,
// fills, statement, portfolio and market data.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hats-trading/hats/market"
	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

const marketDataNote = "Market data is read from whichever node answers and may be slightly stale; the output says so. "

func keyFlag() cli.Flag {
	return &cli.StringFlag{Name: "idempotency-key", Usage: "`KEY` naming this request; repeat it to learn the outcome of an earlier try"}
}

// marketCommands are the exchange subcommands of `hats trade`.
func marketCommands() []*cli.Command {
	orderFlags := func() []cli.Flag {
		return withEnv(
			&cli.StringFlag{Name: "limit", Usage: "limit `PRICE` (a limit order; with --stop, a stop-limit order)"},
			&cli.StringFlag{Name: "stop", Usage: "stop trigger `PRICE` (a stop order; with --limit, a stop-limit order)"},
			&cli.StringFlag{Name: "tif", Usage: "time in force: gtc, day, ioc or fok (default gtc for limit orders, ioc for market and stop orders)"},
			&cli.BoolFlag{Name: "post-only", Usage: "reject the order instead of letting it take liquidity"},
			&cli.StringFlag{Name: "client-id", Usage: "client order `ID` (1-64 printable characters; generated when absent); repeating it returns the first order"},
		)
	}
	orderDesc := "Without --limit or --stop the order is a market order: it trades at once against the book, never beyond the " +
		"protective collar (10% from the last trade or reference price), and never rests. PRICE is a decimal with at most " +
		"2 places. The order's client ID is printed; if the outcome is unknown, 'hats trade order --client-id ID' resolves it. " + clientFlagsNote
	return []*cli.Command{
		watchCommand(),
		{
			Name:        "symbols",
			Usage:       "list the tradable instruments",
			Description: clientFlagsNote,
			Action:      tradeSymbols,
		},
		{
			Name:         "deposit-shares",
			Usage:        "move shares into the account (at the reference price as cost basis)",
			ArgsUsage:    "SYMBOL QTY",
			Description:  clientFlagsNote,
			Flags:        withEnv(keyFlag()),
			Action:       func(cCtx *cli.Context) error { return tradeShares(cCtx, "deposit-shares") },
			OnUsageError: quantityUsageError,
		},
		{
			Name:         "withdraw-shares",
			Usage:        "move shares out of the account",
			ArgsUsage:    "SYMBOL QTY",
			Description:  clientFlagsNote,
			Flags:        withEnv(keyFlag()),
			Action:       func(cCtx *cli.Context) error { return tradeShares(cCtx, "withdraw-shares") },
			OnUsageError: quantityUsageError,
		},
		{
			Name:         "buy",
			Usage:        "place a buy order",
			ArgsUsage:    "SYMBOL QTY",
			Description:  orderDesc,
			Flags:        orderFlags(),
			Action:       func(cCtx *cli.Context) error { return tradePlace(cCtx, "buy") },
			OnUsageError: quantityUsageError,
		},
		{
			Name:         "sell",
			Usage:        "place a sell order",
			ArgsUsage:    "SYMBOL QTY",
			Description:  orderDesc,
			Flags:        orderFlags(),
			Action:       func(cCtx *cli.Context) error { return tradePlace(cCtx, "sell") },
			OnUsageError: quantityUsageError,
		},
		{
			Name:        "cancel",
			Usage:       "cancel an open order",
			ArgsUsage:   "ORDER_ID",
			Description: clientFlagsNote,
			Action:      tradeCancel,
		},
		{
			Name:      "amend",
			Usage:     "change an open order's quantity and/or limit price",
			ArgsUsage: "ORDER_ID",
			Description: "--qty is the new total quantity, filled shares included. Reducing it keeps the order's place in the queue; " +
				"a new price or a larger quantity loses it. " + clientFlagsNote,
			Flags: withEnv(
				&cli.Int64Flag{Name: "qty", Usage: "new total `QTY`"},
				&cli.StringFlag{Name: "limit", Usage: "new limit `PRICE`"},
			),
			Action: tradeAmend,
		},
		{
			Name:        "order",
			Usage:       "show one order, by order ID or client ID",
			ArgsUsage:   "ORDER_ID | --client-id ID",
			Description: clientFlagsNote,
			Flags:       withEnv(&cli.StringFlag{Name: "client-id", Usage: "find the order by its client order `ID`"}),
			Action:      tradeOrderShow,
		},
		{
			Name:        "orders",
			Usage:       "list the account's orders, newest first",
			Description: clientFlagsNote,
			Flags: withEnv(
				&cli.BoolFlag{Name: "open", Usage: "only open and partially filled orders"},
				&cli.StringFlag{Name: "symbol", Usage: "only orders in `SYMBOL`"},
				&cli.IntFlag{Name: "limit", Value: transport.DefaultOrdersLimit, Usage: "at most `N` orders"},
			),
			Action: tradeOrders,
		},
		{
			Name:        "fills",
			Usage:       "list the account's executions, newest first",
			Description: clientFlagsNote,
			Flags: withEnv(
				&cli.StringFlag{Name: "symbol", Usage: "only fills in `SYMBOL`"},
				&cli.IntFlag{Name: "limit", Value: transport.DefaultFillsLimit, Usage: "at most `N` fills"},
			),
			Action: tradeFills,
		},
		{
			Name:        "activity",
			Usage:       "the account statement: every cash and share movement with running balances",
			Description: clientFlagsNote,
			Action:      tradeActivity,
		},
		{
			Name:        "portfolio",
			Usage:       "cash, positions valued at the last price, profit and loss",
			Description: clientFlagsNote,
			Action:      tradePortfolio,
		},
		{
			Name:        "quote",
			Usage:       "bid, ask, last, change and volume of symbols",
			ArgsUsage:   "SYMBOL...",
			Description: marketDataNote + clientFlagsNote,
			Action:      tradeQuote,
		},
		{
			Name:        "book",
			Usage:       "a symbol's order book, aggregated by price level",
			ArgsUsage:   "SYMBOL",
			Description: marketDataNote + clientFlagsNote,
			Flags:       withEnv(&cli.IntFlag{Name: "depth", Value: transport.DefaultBookDepth, Usage: "`N` levels per side (at most 100)"}),
			Action:      tradeBook,
		},
		{
			Name:        "tape",
			Usage:       "a symbol's recent trades, newest first",
			ArgsUsage:   "SYMBOL",
			Description: marketDataNote + clientFlagsNote,
			Flags:       withEnv(&cli.IntFlag{Name: "limit", Value: transport.DefaultTradesLimit, Usage: "at most `N` trades (at most 1000)"}),
			Action:      tradeTape,
		},
		{
			Name:        "candles",
			Usage:       "a symbol's OHLCV candles built from its trades",
			ArgsUsage:   "SYMBOL",
			Description: marketDataNote + clientFlagsNote,
			Flags: withEnv(
				&cli.StringFlag{Name: "interval", Value: "1m", Usage: "candle width: 1m, 5m or 1h"},
				&cli.IntFlag{Name: "limit", Value: transport.DefaultCandles, Usage: "at most `N` candles (at most 1000)"},
			),
			Action: tradeCandles,
		},
	}
}

// quantityUsageError reports a negative QTY ("buy AAPL -5"), which the
// flag parser takes for an unknown flag, as the bad quantity it is.
func quantityUsageError(cCtx *cli.Context, err error, isSubcommand bool) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		if n := strings.TrimLeft(name, "-"); n != "" && strings.Trim(n, "0123456789") == "" {
			return fmt.Errorf("quantity: must be positive, got -%s", n)
		}
	}
	return onUsageError(cCtx, err, isSubcommand)
}

// ---- shared helpers ----

// marketClient builds the env and client; withSession requires a login.
func marketClient(cCtx *cli.Context, withSession bool) (*clientEnv, *transport.Client, error) {
	e, err := newClientEnv(cCtx)
	if err != nil {
		return nil, nil, err
	}
	if withSession {
		if err := e.requireSession(); err != nil {
			return nil, nil, err
		}
	}
	c, err := e.client()
	if err != nil {
		return nil, nil, err
	}
	return e, c, nil
}

func argSymbol(s string) (string, error) {
	sym, err := transport.NormalizeSymbol(s)
	if err != nil {
		return "", fmt.Errorf("symbol: %w", err)
	}
	return sym, nil
}

func argOrderID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("order id: must be a positive whole number, got %q", s)
	}
	return id, nil
}

func intRange(name string, n, max int) error {
	if n <= 0 || n > max {
		return fmt.Errorf("%s: must be between 1 and %d, got %d", name, max, n)
	}
	return nil
}

// cliField renames an API field in an error message to the CLI's name.
func cliField(msg string) string {
	for api, flag := range map[string]string{
		"limit_price: ": "--limit: ", "stop_price: ": "--stop: ", "client_id: ": "--client-id: ",
		"post_only: ": "--post-only: ", "tif: ": "--tif: ", "quantity: ": "quantity: ",
	} {
		if rest, ok := strings.CutPrefix(msg, api); ok {
			return flag + rest
		}
	}
	return msg
}

// painter colours output, only when stdout is a terminal (and NO_COLOR is
// unset). Every colour code has the same length, so a column whose cells
// are all painted stays aligned in a tabwriter table.
type painter struct{ on bool }

func newPainter(w io.Writer) painter {
	f, ok := w.(*os.File)
	return painter{on: ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == ""}
}

const (
	ansiGreen   = "\x1b[32m"
	ansiRed     = "\x1b[31m"
	ansiDefault = "\x1b[39m"
	ansiReset   = "\x1b[0m"
)

func (p painter) paint(code, s string) string {
	if !p.on {
		return s
	}
	return code + s + ansiReset
}

// side paints buy green and sell red.
func (p painter) side(s string) string {
	switch s {
	case "buy":
		return p.paint(ansiGreen, s)
	case "sell":
		return p.paint(ansiRed, s)
	}
	return p.paint(ansiDefault, s)
}

// signed paints a signed decimal: on a terminal, positive values get a "+"
// and green, negative ones red.
func (p painter) signed(s string) string {
	switch {
	case !p.on || s == "" || s == "-":
		return p.paint(ansiDefault, s)
	case strings.HasPrefix(s, "-"):
		return p.paint(ansiRed, s)
	case strings.Trim(s, "0.") == "":
		return p.paint(ansiDefault, s)
	}
	return p.paint(ansiGreen, "+"+s)
}

// table prints aligned rows under a header. In a column where some cell
// is painted, every other cell (the header too) gets a same-length no-op
// colour code, so the tabwriter's byte counts line up with what shows.
func table(w io.Writer, header []string, rows [][]string) {
	painted := func(s string) bool { return strings.HasPrefix(s, "\x1b[") }
	for col := range header {
		any := false
		for _, r := range rows {
			if col < len(r) && painted(r[col]) {
				any = true
				break
			}
		}
		if !any {
			continue
		}
		header[col] = ansiDefault + header[col] + ansiReset
		for _, r := range rows {
			if col < len(r) && !painted(r[col]) {
				r[col] = ansiDefault + r[col] + ansiReset
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// shortTime shows an API time to the second, in UTC.
func shortTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func staleNote(w io.Writer, c transport.Consistency, idx uint64) {
	fmt.Fprintf(w, "(%s read at applied index %d: market data may lag the leader)\n", c, idx)
}

// ---- commands ----

func tradeSymbols(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, false)
	if err != nil {
		return err
	}
	list, err := c.Symbols(cCtx.Context)
	if err != nil {
		return err
	}
	return e.emit(list, func(w io.Writer) {
		rows := make([][]string, 0, len(list.Symbols))
		for _, s := range list.Symbols {
			rows = append(rows, []string{s.Symbol, s.Name, s.RefPrice, s.Tick, strconv.FormatInt(s.Lot, 10)})
		}
		table(w, []string{"SYMBOL", "NAME", "REF PRICE", "TICK", "LOT"}, rows)
	})
}

func tradeShares(cCtx *cli.Context, op string) error {
	if err := exactArgs(cCtx, "SYMBOL", "QTY"); err != nil {
		return err
	}
	sym, err := argSymbol(cCtx.Args().Get(0))
	if err != nil {
		return err
	}
	qty, err := transport.ParseQuantity(cCtx.Args().Get(1), trader.MaxShares)
	if err != nil {
		return fmt.Errorf("quantity: %w", err)
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	key := cCtx.String("idempotency-key")
	if key == "" {
		key = transport.NewIdempotencyKey()
	}
	var pos *transport.Position
	if op == "deposit-shares" {
		pos, err = c.DepositShares(cCtx.Context, sym, qty, key)
	} else {
		pos, err = c.WithdrawShares(cCtx.Context, sym, qty, key)
	}
	if err != nil {
		return writeErr(op, err)
	}
	e.remember(c)
	return e.emit(pos, func(w io.Writer) {
		if pos.Replayed {
			fmt.Fprintf(w, "already done: idempotency key %s was used before; this is its original result\n", key)
		} else {
			past := map[string]string{"deposit-shares": "deposited", "withdraw-shares": "withdrew"}[op]
			fmt.Fprintf(w, "%s %d %s\n", past, qty, sym)
		}
		printKV(w,
			"symbol", pos.Symbol,
			"quantity", strconv.FormatInt(pos.Quantity, 10),
			"available", strconv.FormatInt(pos.AvailableQuantity, 10),
			"avg cost", pos.AvgCost,
		)
	})
}

func printOrder(w io.Writer, o *transport.Order) {
	p := newPainter(w)
	kv := []string{
		"order id", strconv.FormatUint(o.OrderID, 10),
		"client id", o.ClientID,
		"symbol", o.Symbol,
		"side", p.side(o.Side),
		"type", o.Type,
		"tif", o.TIF,
		"status", o.Status,
		"filled", fmt.Sprintf("%d of %d", o.FilledQuantity, o.Quantity),
		"avg price", dash(o.AvgFillPrice),
	}
	if o.LimitPrice != "" {
		kv = append(kv, "limit", o.LimitPrice)
	}
	if o.StopPrice != "" {
		kv = append(kv, "stop", o.StopPrice, "triggered", strconv.FormatBool(o.Triggered))
	}
	if o.PostOnly {
		kv = append(kv, "post-only", "true")
	}
	if o.Reason != "" {
		kv = append(kv, "reason", o.Reason)
	}
	kv = append(kv, "created", shortTime(o.CreatedAt), "updated", shortTime(o.UpdatedAt))
	if o.ExpiresAt != "" {
		kv = append(kv, "expires", shortTime(o.ExpiresAt))
	}
	printKV(w, kv...)
}

func tradePlace(cCtx *cli.Context, side string) error {
	if err := exactArgs(cCtx, "SYMBOL", "QTY"); err != nil {
		return err
	}
	qty, err := transport.ParseQuantity(cCtx.Args().Get(1), market.MaxQuantity)
	if err != nil {
		return fmt.Errorf("quantity: %w", err)
	}
	req := transport.OrderRequest{
		ClientID: cCtx.String("client-id"), Symbol: cCtx.Args().Get(0), Side: side, TIF: cCtx.String("tif"),
		Quantity: qty, LimitPrice: cCtx.String("limit"), StopPrice: cCtx.String("stop"), PostOnly: cCtx.Bool("post-only"),
	}
	if req.ClientID == "" {
		req.ClientID = transport.NewClientID()
	}
	if _, ae := transport.ValidateOrderRequest(&req); ae != nil {
		return errors.New(cliField(ae.Message))
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	o, err := c.PlaceOrder(cCtx.Context, req)
	if err != nil {
		var ou *transport.OutcomeUnknownError
		var rej *transport.OrderRejectedError
		switch {
		case errors.As(err, &ou):
			return fmt.Errorf("order outcome unknown: it may or may not have been placed; find out with: hats trade order --client-id %s (%v)", req.ClientID, ou.Err)
		case errors.As(err, &rej):
			e.remember(c)
			if rej.Order != nil {
				if e.json {
					_ = printJSON(e.out, rej.Order)
				}
				return fmt.Errorf("order %d (client id %s) rejected: %s: %s", rej.Order.OrderID, req.ClientID, rej.Err.Code, rej.Err.Message)
			}
			return fmt.Errorf("order (client id %s) rejected: %s: %s", req.ClientID, rej.Err.Code, rej.Err.Message)
		}
		return authErr(err)
	}
	e.remember(c)
	if err := e.emit(o, func(w io.Writer) {
		if o.Replayed {
			fmt.Fprintf(w, "already placed: client id %s was used before; this is the original order\n", o.ClientID)
		}
		printOrder(w, o)
	}); err != nil {
		return err
	}
	if o.Status == transport.StatusRejected {
		return fmt.Errorf("order %d rejected: %s", o.OrderID, o.Reason)
	}
	return nil
}

// changeErr explains a failed cancel or amend.
func changeErr(op string, id uint64, err error) error {
	if errors.Is(err, transport.ErrOutcomeUnknown) {
		return fmt.Errorf("%s outcome unknown: check the order with: hats trade order %d (%v)", op, id, err)
	}
	return authErr(err)
}

func tradeCancel(cCtx *cli.Context) error {
	if err := exactArgs(cCtx, "ORDER_ID"); err != nil {
		return err
	}
	id, err := argOrderID(cCtx.Args().First())
	if err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	o, err := c.Cancel(cCtx.Context, id)
	if err != nil {
		return changeErr("cancel", id, err)
	}
	e.remember(c)
	return e.emit(o, func(w io.Writer) {
		fmt.Fprintf(w, "cancelled order %d\n", o.OrderID)
		printOrder(w, o)
	})
}

func tradeAmend(cCtx *cli.Context) error {
	if err := exactArgs(cCtx, "ORDER_ID"); err != nil {
		return err
	}
	id, err := argOrderID(cCtx.Args().First())
	if err != nil {
		return err
	}
	if !cCtx.IsSet("qty") && !cCtx.IsSet("limit") {
		return usageErrorf(cCtx, "amend: pass --qty and/or --limit")
	}
	var qty int64
	if cCtx.IsSet("qty") {
		qty = cCtx.Int64("qty")
		if err := transport.CheckQuantity(qty, market.MaxQuantity); err != nil {
			return fmt.Errorf("--qty: %w", err)
		}
	}
	limit := ""
	if cCtx.IsSet("limit") {
		p, err := market.ParsePrice(cCtx.String("limit"))
		if err != nil {
			return fmt.Errorf("--limit: %w", err)
		}
		limit = market.FormatPrice(p)
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	o, err := c.Amend(cCtx.Context, id, qty, limit)
	if err != nil {
		return changeErr("amend", id, err)
	}
	e.remember(c)
	return e.emit(o, func(w io.Writer) {
		fmt.Fprintf(w, "amended order %d\n", o.OrderID)
		printOrder(w, o)
	})
}

func tradeOrderShow(cCtx *cli.Context) error {
	cid := cCtx.String("client-id")
	switch {
	case cid != "" && cCtx.NArg() > 0:
		return usageErrorf(cCtx, "order: give ORDER_ID or --client-id, not both")
	case cid == "":
		if err := exactArgs(cCtx, "ORDER_ID"); err != nil {
			return err
		}
	}
	var id uint64
	if cid == "" {
		var err error
		if id, err = argOrderID(cCtx.Args().First()); err != nil {
			return err
		}
	} else if err := transport.ValidateClientID(cid); err != nil {
		return fmt.Errorf("--client-id: %w", err)
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	var o *transport.Order
	if cid != "" {
		o, err = c.OrderByClientID(cCtx.Context, cid)
		if transport.ErrorCode(err) == transport.CodeUnknownOrder {
			return fmt.Errorf("no order with client id %s: it was never placed, so placing it again is safe", cid)
		}
	} else {
		o, err = c.Order(cCtx.Context, id)
	}
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(o, func(w io.Writer) { printOrder(w, o) })
}

func tradeOrders(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	q := transport.OrdersQuery{Open: cCtx.Bool("open"), Limit: cCtx.Int("limit")}
	if s := cCtx.String("symbol"); s != "" {
		sym, err := argSymbol(s)
		if err != nil {
			return err
		}
		q.Symbol = sym
	}
	if err := intRange("--limit", q.Limit, transport.MaxOrdersLimit); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	list, err := c.Orders(cCtx.Context, q)
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(list, func(w io.Writer) {
		p := newPainter(w)
		rows := make([][]string, 0, len(list.Orders))
		for _, o := range list.Orders {
			rows = append(rows, []string{
				strconv.FormatUint(o.OrderID, 10), o.Symbol, p.side(o.Side), o.Type, o.TIF,
				strconv.FormatInt(o.Quantity, 10), strconv.FormatInt(o.FilledQuantity, 10),
				dash(o.LimitPrice), dash(o.StopPrice), dash(o.AvgFillPrice), o.Status, shortTime(o.CreatedAt), o.ClientID,
			})
		}
		table(w, []string{"ID", "SYMBOL", "SIDE", "TYPE", "TIF", "QTY", "FILLED", "LIMIT", "STOP", "AVG PRICE", "STATUS", "CREATED", "CLIENT ID"}, rows)
	})
}

func tradeFills(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	q := transport.FillsQuery{Limit: cCtx.Int("limit")}
	if s := cCtx.String("symbol"); s != "" {
		sym, err := argSymbol(s)
		if err != nil {
			return err
		}
		q.Symbol = sym
	}
	if err := intRange("--limit", q.Limit, transport.MaxFillsLimit); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	list, err := c.Fills(cCtx.Context, q)
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(list, func(w io.Writer) {
		p := newPainter(w)
		rows := make([][]string, 0, len(list.Fills))
		for _, f := range list.Fills {
			rows = append(rows, []string{
				shortTime(f.Time), f.Symbol, p.side(f.Side), strconv.FormatInt(f.Quantity, 10), f.Price, f.Amount,
				strconv.FormatUint(f.OrderID, 10), strconv.FormatUint(f.TradeSeq, 10),
			})
		}
		table(w, []string{"TIME", "SYMBOL", "SIDE", "QTY", "PRICE", "AMOUNT", "ORDER", "TRADE"}, rows)
	})
}

// fullActivity reads every page of the statement.
func fullActivity(ctx context.Context, c *transport.Client) (*transport.Activity, error) {
	var all *transport.Activity
	var after uint64
	for {
		page, err := c.Activity(ctx, transport.ActivityQuery{After: after, Limit: transport.MaxActivity})
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = page
		} else {
			all.Entries = append(all.Entries, page.Entries...)
			all.Cash, all.AppliedIndex, all.NextAfter = page.Cash, page.AppliedIndex, page.NextAfter
		}
		if !page.More || len(page.Entries) == 0 {
			all.More = false
			return all, nil
		}
		after = page.NextAfter
	}
}

func tradeActivity(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	act, err := fullActivity(cCtx.Context, c)
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(act, func(w io.Writer) {
		p := newPainter(w)
		rows := make([][]string, 0, len(act.Entries))
		for _, en := range act.Entries {
			qty := ""
			if en.Symbol != "" {
				qty = strconv.FormatInt(en.Quantity, 10)
			}
			shares := ""
			if en.Symbol != "" {
				shares = strconv.FormatInt(en.ShareBalance, 10)
			}
			rows = append(rows, []string{
				strconv.FormatUint(en.Seq, 10), shortTime(en.Time), en.Kind, dash(en.Symbol), dash(qty), dash(en.Price),
				p.signed(en.Amount), en.CashBalance, dash(shares),
			})
		}
		table(w, []string{"SEQ", "TIME", "KIND", "SYMBOL", "QTY", "PRICE", "AMOUNT", "CASH", "SHARES"}, rows)
		fmt.Fprintf(w, "cash %s\n", act.Cash)
	})
}

func tradePortfolio(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, true)
	if err != nil {
		return err
	}
	pf, err := c.Portfolio(cCtx.Context, "")
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(pf, func(w io.Writer) {
		p := newPainter(w)
		printKV(w, "cash", pf.Cash, "available cash", pf.AvailableCash)
		fmt.Fprintln(w)
		rows := make([][]string, 0, len(pf.Positions))
		for _, ps := range pf.Positions {
			rows = append(rows, []string{
				ps.Symbol, strconv.FormatInt(ps.Quantity, 10), strconv.FormatInt(ps.AvailableQuantity, 10), ps.AvgCost,
				dash(ps.LastPrice), ps.MarketValue, p.signed(ps.UnrealizedPnL), p.signed(ps.RealizedPnL),
			})
		}
		table(w, []string{"SYMBOL", "QTY", "AVAILABLE", "AVG COST", "LAST", "MKT VALUE", "UNREALIZED", "REALIZED"}, rows)
		fmt.Fprintln(w)
		printKV(w,
			"market value", pf.MarketValue,
			"unrealized p&l", p.signed(pf.UnrealizedPnL),
			"realized p&l", p.signed(pf.RealizedPnL),
			"equity", pf.Equity,
		)
	})
}

func tradeQuote(cCtx *cli.Context) error {
	if cCtx.NArg() == 0 {
		return usageErrorf(cCtx, "quote takes SYMBOL..., got no symbol")
	}
	var syms []string
	for _, a := range cCtx.Args().Slice() {
		sym, err := argSymbol(a)
		if err != nil {
			return err
		}
		syms = append(syms, sym)
	}
	e, c, err := marketClient(cCtx, false)
	if err != nil {
		return err
	}
	ql, err := c.Quote(cCtx.Context, syms...)
	if err != nil {
		return err
	}
	return e.emit(ql, func(w io.Writer) {
		p := newPainter(w)
		rows := make([][]string, 0, len(ql.Quotes))
		for _, q := range ql.Quotes {
			bid, ask := "-", "-"
			if q.Bid != "" {
				bid = fmt.Sprintf("%s x %d", q.Bid, q.BidSize)
			}
			if q.Ask != "" {
				ask = fmt.Sprintf("%s x %d", q.Ask, q.AskSize)
			}
			pct := q.ChangePct
			if pct != "" {
				pct += "%"
			}
			rows = append(rows, []string{
				q.Symbol, bid, ask, dash(q.Last), p.signed(dash(q.Change)), p.signed(dash(pct)),
				strconv.FormatInt(q.Volume, 10), q.RefPrice, dash(shortTime(q.Time)),
			})
		}
		table(w, []string{"SYMBOL", "BID", "ASK", "LAST", "CHANGE", "CHANGE%", "VOLUME", "REF", "TIME"}, rows)
		staleNote(w, ql.Consistency, ql.AppliedIndex)
	})
}

func oneSymbol(cCtx *cli.Context) (string, error) {
	if err := exactArgs(cCtx, "SYMBOL"); err != nil {
		return "", err
	}
	return argSymbol(cCtx.Args().First())
}

func tradeBook(cCtx *cli.Context) error {
	sym, err := oneSymbol(cCtx)
	if err != nil {
		return err
	}
	depth := cCtx.Int("depth")
	if err := intRange("--depth", depth, transport.MaxBookDepth); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, false)
	if err != nil {
		return err
	}
	b, err := c.Book(cCtx.Context, sym, depth)
	if err != nil {
		return err
	}
	return e.emit(b, func(w io.Writer) {
		p := newPainter(w)
		n := max(len(b.Bids), len(b.Asks))
		rows := make([][]string, 0, n)
		for i := 0; i < n; i++ {
			row := []string{"", "", p.paint(ansiGreen, ""), p.paint(ansiRed, ""), "", ""}
			if i < len(b.Bids) {
				l := b.Bids[i]
				row[0], row[1], row[2] = strconv.Itoa(l.Orders), strconv.FormatInt(l.Quantity, 10), p.paint(ansiGreen, l.Price)
			}
			if i < len(b.Asks) {
				l := b.Asks[i]
				row[3], row[4], row[5] = p.paint(ansiRed, l.Price), strconv.FormatInt(l.Quantity, 10), strconv.Itoa(l.Orders)
			}
			rows = append(rows, row)
		}
		fmt.Fprintf(w, "%s  last %s  ref %s  trade seq %d\n", b.Symbol, dash(b.Last), dash(b.RefPrice), b.TradeSeq)
		table(w, []string{"ORDERS", "BID QTY", "BID", "ASK", "ASK QTY", "ORDERS"}, rows)
		staleNote(w, b.Consistency, b.AppliedIndex)
	})
}

func tradeTape(cCtx *cli.Context) error {
	sym, err := oneSymbol(cCtx)
	if err != nil {
		return err
	}
	limit := cCtx.Int("limit")
	if err := intRange("--limit", limit, transport.MaxTradesLimit); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, false)
	if err != nil {
		return err
	}
	tp, err := c.Trades(cCtx.Context, sym, limit)
	if err != nil {
		return err
	}
	return e.emit(tp, func(w io.Writer) {
		p := newPainter(w)
		rows := make([][]string, 0, len(tp.Trades))
		for _, t := range tp.Trades {
			rows = append(rows, []string{strconv.FormatUint(t.Seq, 10), shortTime(t.Time), t.Price, strconv.FormatInt(t.Quantity, 10), p.side(t.TakerSide)})
		}
		table(w, []string{"SEQ", "TIME", "PRICE", "QTY", "TAKER"}, rows)
		staleNote(w, tp.Consistency, tp.AppliedIndex)
	})
}

func tradeCandles(cCtx *cli.Context) error {
	sym, err := oneSymbol(cCtx)
	if err != nil {
		return err
	}
	iv := cCtx.String("interval")
	if _, ok := transport.CandleIntervals[iv]; !ok {
		return fmt.Errorf("--interval: must be 1m, 5m or 1h, got %q", iv)
	}
	limit := cCtx.Int("limit")
	if err := intRange("--limit", limit, transport.MaxCandles); err != nil {
		return err
	}
	e, c, err := marketClient(cCtx, false)
	if err != nil {
		return err
	}
	cs, err := c.Candles(cCtx.Context, sym, iv, limit)
	if err != nil {
		return err
	}
	return e.emit(cs, func(w io.Writer) {
		rows := make([][]string, 0, len(cs.Candles))
		for _, k := range cs.Candles {
			rows = append(rows, []string{shortTime(k.Start), k.Open, k.High, k.Low, k.Close, strconv.FormatInt(k.Volume, 10), strconv.Itoa(k.Trades)})
		}
		table(w, []string{"START", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "TRADES"}, rows)
		staleNote(w, cs.Consistency, cs.AppliedIndex)
	})
}
