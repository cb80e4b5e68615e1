package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/hats-trading/hats/trader"
	"github.com/hats-trading/hats/transport"
)

const clientFlagsNote = "Client flags (--cluster, --session, --insecure, --tls-ca, --tls-cert, --tls-key, --json, --timeout) may come before or after the subcommand; see 'hats trade --help'."

func tradeCommand() *cli.Command {
	cmd := &cli.Command{
		Name:  "trade",
		Usage: "trader commands: register, log in, manage the account, trade, market data",
		Flags: clientFlags(),
		Subcommands: []*cli.Command{
			{
				Name:        "register",
				Usage:       "create a trader account",
				ArgsUsage:   "USER",
				Description: clientFlagsNote,
				Flags: withEnv(
					&cli.StringFlag{Name: "name", Usage: "full name"},
					&cli.StringFlag{Name: "email", Usage: "email address"},
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the password from the first line of stdin"},
					&cli.StringFlag{Name: "idempotency-key", Usage: "`KEY` naming this request; repeat it to learn the outcome of an earlier try"},
				),
				Action: tradeRegister,
			},
			{
				Name:        "login",
				Usage:       "log in and save the session",
				ArgsUsage:   "USER",
				Description: clientFlagsNote,
				Flags: withEnv(
					&cli.BoolFlag{Name: "password-stdin", Usage: "read the password from the first line of stdin"},
				),
				Action: tradeLogin,
			},
			{
				Name:        "logout",
				Usage:       "revoke the session and remove the session file",
				Description: clientFlagsNote,
				Action:      tradeLogout,
			},
			{
				Name:        "whoami",
				Usage:       "show the logged-in user",
				Description: clientFlagsNote,
				Action:      tradeWhoAmI,
			},
			{
				Name:        "account",
				Usage:       "show the account's balances and details",
				Description: clientFlagsNote,
				Flags: withEnv(
					&cli.StringFlag{Name: "consistency", Value: string(transport.Linearizable), Usage: "read consistency: stale, leader or linearizable"},
				),
				Action: tradeAccount,
			},
			{
				Name:        "profile",
				Usage:       "change the name and/or email",
				Description: clientFlagsNote,
				Flags: withEnv(
					&cli.StringFlag{Name: "name", Usage: "new full name"},
					&cli.StringFlag{Name: "email", Usage: "new email address"},
					&cli.StringFlag{Name: "idempotency-key", Usage: "`KEY` naming this request; repeat it to learn the outcome of an earlier try"},
				),
				Action: tradeProfile,
			},
			{
				Name:         "deposit",
				Usage:        "add cash to the account",
				ArgsUsage:    "AMOUNT",
				Description:  "AMOUNT is a decimal with at most 2 places, like 150.25. " + clientFlagsNote,
				Flags:        withEnv(&cli.StringFlag{Name: "idempotency-key", Usage: "`KEY` naming this request; repeat it to learn the outcome of an earlier try"}),
				Action:       func(cCtx *cli.Context) error { return tradeCash(cCtx, "deposit") },
				OnUsageError: amountUsageError,
			},
			{
				Name:         "withdraw",
				Usage:        "take cash out of the account",
				ArgsUsage:    "AMOUNT",
				Description:  "AMOUNT is a decimal with at most 2 places, like 150.25. " + clientFlagsNote,
				Flags:        withEnv(&cli.StringFlag{Name: "idempotency-key", Usage: "`KEY` naming this request; repeat it to learn the outcome of an earlier try"}),
				Action:       func(cCtx *cli.Context) error { return tradeCash(cCtx, "withdraw") },
				OnUsageError: amountUsageError,
			},
		},
	}
	cmd.Subcommands = append(cmd.Subcommands, marketCommands()...)
	return cmd
}

// exactArgs checks the number of positional arguments.
func exactArgs(cCtx *cli.Context, names ...string) error {
	if n := cCtx.NArg(); n != len(names) {
		if len(names) == 0 {
			return usageErrorf(cCtx, "%s takes no arguments, got %q", cCtx.Command.Name, cCtx.Args().Slice())
		}
		return usageErrorf(cCtx, "%s takes %s, got %d argument(s)", cCtx.Command.Name, strings.Join(names, " "), n)
	}
	return nil
}

// amountUsageError reports a negative AMOUNT ("deposit -5"), which the flag
// parser takes for an unknown flag, as the bad amount it is.
func amountUsageError(cCtx *cli.Context, err error, isSubcommand bool) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		if c, perr := trader.ParseCents(strings.TrimLeft(name, "-")); perr == nil {
			return fmt.Errorf("amount: %w: amount must be positive, got -%s", trader.ErrBadAmount, c)
		}
	}
	return onUsageError(cCtx, err, isSubcommand)
}

// parseAmount validates a deposit or withdrawal amount locally and returns
// it in canonical form ("100" -> "100.00").
func parseAmount(s string) (string, error) {
	c, err := trader.ParseCents(s)
	if err == nil {
		err = trader.ValidateAmount(c)
	}
	if err != nil {
		return "", fmt.Errorf("amount: %w", err)
	}
	return c.String(), nil
}

// writeErr explains a failed write; an unknown outcome names the key to
// retry with.
func writeErr(op string, err error) error {
	var ou *transport.OutcomeUnknownError
	if errors.As(err, &ou) && ou.Key != "" {
		return fmt.Errorf("%s outcome unknown: it may or may not have been applied; run the same command with --idempotency-key %s to learn the result (%v)", op, ou.Key, ou.Err)
	}
	return authErr(err)
}

// authErr turns a rejected token into advice.
func authErr(err error) error {
	if errors.Is(err, transport.ErrUnauthenticated) && !errors.Is(err, transport.ErrOutcomeUnknown) {
		return fmt.Errorf("session expired or revoked (%v): run hats trade login USER", err)
	}
	return err
}

// readPassword reads a password from stdin (--password-stdin) or a no-echo
// prompt on a terminal; confirm asks twice.
func readPassword(ctx context.Context, cCtx *cli.Context, confirm bool) (string, error) {
	in := cCtx.App.Reader
	if cCtx.Bool("password-stdin") {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("password: read stdin: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return "", errors.New("password: stdin held no password")
		}
		return line, nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageErrorf(cCtx, "password: stdin is not a terminal; pass --password-stdin and write the password to stdin")
	}
	p, err := promptPassword(ctx, f, cCtx.App.ErrWriter, "Password: ")
	if err != nil || !confirm {
		return p, err
	}
	again, err := promptPassword(ctx, f, cCtx.App.ErrWriter, "Repeat password: ")
	if err != nil {
		return "", err
	}
	if again != p {
		return "", errors.New("password: the two passwords differ")
	}
	return p, nil
}

// promptPassword reads one line without echo; an interrupt restores the
// terminal and cancels.
func promptPassword(ctx context.Context, f *os.File, w io.Writer, prompt string) (string, error) {
	fd := int(f.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	fmt.Fprint(w, prompt)
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		fmt.Fprintln(w)
		if r.err != nil {
			return "", fmt.Errorf("password: %w", r.err)
		}
		return string(r.b), nil
	case <-ctx.Done():
		_ = term.Restore(fd, state)
		fmt.Fprintln(w)
		return "", ctx.Err()
	}
}

func printAccount(w io.Writer, a *transport.Account) {
	kv := []string{
		"username", a.Username,
		"account id", strconv.FormatUint(a.AccountID, 10),
		"name", a.Name,
		"email", a.Email,
		"cash", a.Cash,
		"available cash", a.AvailableCash,
	}
	if a.CreatedAt != "" {
		kv = append(kv, "created", a.CreatedAt)
	}
	printKV(w, kv...)
}

func tradeRegister(cCtx *cli.Context) error {
	if err := exactArgs(cCtx, "USER"); err != nil {
		return err
	}
	req := transport.RegisterRequest{
		Username:       cCtx.Args().First(),
		Name:           cCtx.String("name"),
		Email:          cCtx.String("email"),
		IdempotencyKey: cCtx.String("idempotency-key"),
	}
	if err := trader.ValidateUsername(req.Username); err != nil {
		return fmt.Errorf("username: %w", err)
	}
	if err := trader.ValidateName(req.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if err := trader.ValidateEmail(req.Email); err != nil {
		return fmt.Errorf("email: %w", err)
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	pw, err := readPassword(cCtx.Context, cCtx, true)
	if err != nil {
		return err
	}
	if err := trader.ValidatePassword(pw); err != nil {
		return fmt.Errorf("password: %w", err)
	}
	req.Password = pw
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = transport.NewIdempotencyKey()
	}
	acct, err := c.Register(cCtx.Context, req)
	if err != nil {
		return writeErr("register", err)
	}
	return e.emit(acct, func(w io.Writer) {
		fmt.Fprintf(w, "registered %s (account %d); log in with: hats trade login %s\n", acct.Username, acct.AccountID, acct.Username)
	})
}

func tradeLogin(cCtx *cli.Context) error {
	if err := exactArgs(cCtx, "USER"); err != nil {
		return err
	}
	user := cCtx.Args().First()
	if err := trader.ValidateUsername(user); err != nil {
		return fmt.Errorf("username: %w", err)
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if e.sessionPath == "" {
		return usageErrorf(cCtx, "session: no config dir; pass --session FILE")
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	pw, err := readPassword(cCtx.Context, cCtx, false)
	if err != nil {
		return err
	}
	lr, err := c.Login(cCtx.Context, user, pw)
	if err != nil {
		return err
	}
	s := &session{
		Cluster:   e.cluster,
		Token:     lr.Token,
		Username:  lr.Account.Username,
		AccountID: lr.Account.AccountID,
		ExpiresAt: lr.ExpiresAt,
		Node:      lr.Node,
		NodeAddr:  lr.NodeAddr,
		Preferred: c.Preferred(),
		TLSCA:     absPath(e.tlsFiles.CA),
	}
	if s.Username == "" {
		s.Username = user
	}
	if err := writeSession(e.sessionPath, s); err != nil {
		return err
	}
	view := struct {
		Username  string   `json:"username"`
		AccountID uint64   `json:"account_id"`
		Node      string   `json:"node"`
		ExpiresAt string   `json:"expires_at"`
		Cluster   []string `json:"cluster"`
		Session   string   `json:"session"`
	}{s.Username, s.AccountID, s.Node, s.ExpiresAt, s.Cluster, e.sessionPath}
	return e.emit(view, func(w io.Writer) {
		printKV(w,
			"logged in as", s.Username,
			"account id", strconv.FormatUint(s.AccountID, 10),
			"node", s.Node,
			"expires at", s.ExpiresAt,
			"session", e.sessionPath,
		)
	})
}

func tradeLogout(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if err := e.requireSession(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if err := c.Logout(cCtx.Context); err != nil {
		return fmt.Errorf("logout: could not revoke the session, so %s is kept; try again: %w", e.sessionPath, err)
	}
	if err := removeSession(e.sessionPath); err != nil {
		return err
	}
	return e.emit(map[string]string{"logged_out": e.sess.Username}, func(w io.Writer) {
		fmt.Fprintf(w, "logged out %s\n", e.sess.Username)
	})
}

func tradeWhoAmI(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if err := e.requireSession(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	who, err := c.WhoAmI(cCtx.Context)
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(who, func(w io.Writer) {
		printKV(w,
			"username", who.Username,
			"account id", strconv.FormatUint(who.AccountID, 10),
			"node", who.Node,
			"expires at", who.ExpiresAt,
		)
	})
}

func tradeAccount(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	cons, err := transport.ParseConsistency(cCtx.String("consistency"), transport.Linearizable)
	if err != nil {
		return usageErrorf(cCtx, "consistency: must be stale, leader or linearizable, got %q", cCtx.String("consistency"))
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if err := e.requireSession(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	acct, err := c.Account(cCtx.Context, cons)
	if err != nil {
		return authErr(err)
	}
	e.remember(c)
	return e.emit(acct, func(w io.Writer) { printAccount(w, acct) })
}

func tradeProfile(cCtx *cli.Context) error {
	if err := exactArgs(cCtx); err != nil {
		return err
	}
	req := transport.ProfileRequest{IdempotencyKey: cCtx.String("idempotency-key")}
	if cCtx.IsSet("name") {
		n := cCtx.String("name")
		if err := trader.ValidateName(n); err != nil {
			return fmt.Errorf("name: %w", err)
		}
		req.Name = &n
	}
	if cCtx.IsSet("email") {
		m := cCtx.String("email")
		if err := trader.ValidateEmail(m); err != nil {
			return fmt.Errorf("email: %w", err)
		}
		req.Email = &m
	}
	if req.Name == nil && req.Email == nil {
		return usageErrorf(cCtx, "profile: pass --name and/or --email")
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if err := e.requireSession(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	if req.IdempotencyKey == "" {
		req.IdempotencyKey = transport.NewIdempotencyKey()
	}
	acct, err := c.UpdateProfile(cCtx.Context, req)
	if err != nil {
		return writeErr("profile", err)
	}
	e.remember(c)
	return e.emit(acct, func(w io.Writer) { printAccount(w, acct) })
}

func tradeCash(cCtx *cli.Context, op string) error {
	if err := exactArgs(cCtx, "AMOUNT"); err != nil {
		return err
	}
	amount, err := parseAmount(cCtx.Args().First())
	if err != nil {
		return err
	}
	e, err := newClientEnv(cCtx)
	if err != nil {
		return err
	}
	if err := e.requireSession(); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	key := cCtx.String("idempotency-key")
	if key == "" {
		key = transport.NewIdempotencyKey()
	}
	var acct *transport.Account
	if op == "deposit" {
		acct, err = c.Deposit(cCtx.Context, amount, key)
	} else {
		acct, err = c.Withdraw(cCtx.Context, amount, key)
	}
	if err != nil {
		return writeErr(op, err)
	}
	e.remember(c)
	return e.emit(acct, func(w io.Writer) {
		if acct.Replayed {
			fmt.Fprintf(w, "already done: idempotency key %s was used before; this is its original result\n", key)
		} else {
			past := map[string]string{"deposit": "deposited", "withdraw": "withdrew"}[op]
			fmt.Fprintf(w, "%s %s\n", past, amount)
		}
		printAccount(w, acct)
	})
}
