// Command hats is the single HATS binary: `hats node` runs a cluster member,
// `hats trade` and `hats cluster` are the trader and operator clients.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run builds the app, runs it on args and maps its error to an exit status
// and a one-line reason on stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.RunContext(ctx, permuteArgs(app, args))
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	msg := err.Error()
	if code == exitInterrupted {
		msg = "interrupted"
	}
	fmt.Fprintf(stderr, "hats: %s\n", oneLine(msg))
	return code
}

// newApp builds the command tree.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:        "hats",
		Usage:       "highly available trading of securities",
		HideVersion: true, // `hats version` says more
		Commands: []*cli.Command{
			nodeCommand(),
			demoCommand(),
			tradeCommand(),
			clusterCommand(),
			benchCommand(),
			certCommand(),
			restoreCommand(),
			versionCommand(),
		},
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		// run maps errors to exit statuses; never let the library exit.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return usageErrorf(cCtx, "unknown command %q", cCtx.Args().First())
			}
			return cli.ShowAppHelp(cCtx)
		},
	}
	prepareCommands(app.Commands)
	return app
}

// prepareCommands makes every command report flag errors as usage errors
// and every command group reject unknown subcommands.
func prepareCommands(cmds []*cli.Command) {
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
		prepareCommands(c.Subcommands)
	}
}

func onUsageError(cCtx *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error(), help: helpName(cCtx)}
}

// groupAction runs when a command group gets no known subcommand.
func groupAction(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageErrorf(cCtx, "unknown command %q", cCtx.Args().First())
	}
	return cli.ShowSubcommandHelp(cCtx)
}

// usageError is a mistake in the command line; it exits with status 2.
type usageError struct {
	msg  string
	help string // command whose --help explains, e.g. "hats trade deposit"
}

func (e *usageError) Error() string {
	if e.help == "" {
		return e.msg
	}
	return fmt.Sprintf("%s (see '%s --help')", e.msg, e.help)
}

func usageErrorf(cCtx *cli.Context, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), help: helpName(cCtx)}
}

func helpName(cCtx *cli.Context) string {
	if cCtx == nil || cCtx.Command == nil || cCtx.Command.HelpName == "" {
		return "hats"
	}
	return cCtx.Command.HelpName
}

// exitCode maps an error to an exit status.
func exitCode(err error) int {
	var ue *usageError
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case strings.HasPrefix(err.Error(), "Required flag"):
		// urfave/cli's missing Required flag error (its type is unexported).
		return exitUsage
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailure
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// envVarFor is the environment variable of a flag: HATS_ and the flag's
// name in upper case with dashes as underscores (--data-dir: HATS_DATA_DIR).
func envVarFor(flagName string) string {
	return "HATS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// withEnv gives each flag its HATS_<FLAG> environment variable and returns
// them; every flag of every command is built through it.
func withEnv(flags ...cli.Flag) []cli.Flag {
	for _, f := range flags {
		env := []string{envVarFor(f.Names()[0])}
		switch f := f.(type) {
		case *cli.StringFlag:
			f.EnvVars = env
		case *cli.BoolFlag:
			f.EnvVars = env
		case *cli.DurationFlag:
			f.EnvVars = env
		case *cli.IntFlag:
			f.EnvVars = env
		case *cli.Int64Flag:
			f.EnvVars = env
		case *cli.UintFlag:
			f.EnvVars = env
		case *cli.Uint64Flag:
			f.EnvVars = env
		case *cli.Float64Flag:
			f.EnvVars = env
		case *cli.StringSliceFlag:
			f.EnvVars = env
		case *cli.PathFlag:
			f.EnvVars = env
		case *cli.GenericFlag:
			f.EnvVars = env
		default:
			panic(fmt.Sprintf("withEnv: unsupported flag type %T", f))
		}
	}
	return flags
}

// permuteArgs lets flags follow positional arguments, as in
// `hats trade deposit 100 --cluster X`: each flag moves to the deepest
// command on the path that defines it (unknown flags go to the last
// command, which rejects them), before that command's positional
// arguments. Arguments after "--" are left alone.
func permuteArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	type level struct {
		name  string
		flags []cli.Flag
		subs  []*cli.Command
		out   []string
	}
	path := []*level{{flags: app.Flags, subs: app.Commands}}
	takesValue := func(name string) bool {
		for i := len(path) - 1; i >= 0; i-- {
			if f := findFlag(path[i].flags, name); f != nil {
				return flagTakesValue(f)
			}
		}
		// Defined further down, perhaps (`hats trade --name N register`).
		return flagTakesValue(findFlagBelow(path[len(path)-1].subs, name))
	}
	type flagArg struct {
		name string
		toks []string
	}
	var (
		flags    []flagArg
		pos      []string
		dashdash bool
	)
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case dashdash:
			pos = append(pos, a)
		case a == "--":
			dashdash = true
		case len(a) > 1 && a[0] == '-':
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			fa := flagArg{name: name, toks: []string{a}}
			if !hasValue && takesValue(name) && i+1 < len(args) {
				i++
				fa.toks = append(fa.toks, args[i])
			}
			flags = append(flags, fa)
		default:
			cur := path[len(path)-1]
			if len(pos) == 0 {
				if sub := findCommand(cur.subs, a); sub != nil {
					path = append(path, &level{name: a, flags: sub.Flags, subs: sub.Subcommands})
					continue
				}
			}
			pos = append(pos, a)
		}
	}
	for _, fa := range flags {
		at := path[len(path)-1]
		for i := len(path) - 1; i >= 0; i-- {
			if findFlag(path[i].flags, fa.name) != nil {
				at = path[i]
				break
			}
		}
		at.out = append(at.out, fa.toks...)
	}
	out := []string{args[0]}
	for i, l := range path {
		if i > 0 {
			out = append(out, l.name)
		}
		out = append(out, l.out...)
	}
	if dashdash {
		out = append(out, "--")
	}
	return append(out, pos...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func findFlagBelow(cmds []*cli.Command, name string) cli.Flag {
	for _, c := range cmds {
		if f := findFlag(c.Flags, name); f != nil {
			return f
		}
		if f := findFlagBelow(c.Subcommands, name); f != nil {
			return f
		}
	}
	return nil
}

func flagTakesValue(f cli.Flag) bool {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	return false
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, Go version and commit",
		Action: func(cCtx *cli.Context) error {
			if cCtx.Args().Present() {
				return usageErrorf(cCtx, "version takes no arguments")
			}
			w := cCtx.App.Writer
			fmt.Fprintf(w, "hats %s\n", version)
			fmt.Fprintf(w, "go   %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if bi, ok := debug.ReadBuildInfo(); ok {
				var rev, when, dirty string
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						rev = s.Value
					case "vcs.time":
						when = s.Value
					case "vcs.modified":
						if s.Value == "true" {
							dirty = " (modified)"
						}
					}
				}
				if rev != "" {
					fmt.Fprintf(w, "commit %s%s %s\n", rev, dirty, when)
				}
			}
			return nil
		},
	}
}
