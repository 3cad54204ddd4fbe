// Command walhook gives a legacy application webhooks from PostgreSQL
// logical replication, without a line of its code changed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"walhook/internal/bench"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// errUsage makes main exit with code 2.
var errUsage = errors.New("usage")

const usage = `walhook: webhooks from PostgreSQL logical replication

usage:
  walhook run [-config FILE]      run the sidecar (SIGHUP reloads, SIGINT/SIGTERM stop)
  walhook check [-config FILE]    check the config and the database; exit 1 with one line per problem
  walhook teardown -config FILE -yes   drop the slot and the publication walhook created
  walhook compact [-config FILE | -store DIR]   give the store's free space back to the disk (walhook stopped)
  walhook move-store [-config FILE] [-from DIR]  copy a bbolt store into the PostgreSQL store the config names (walhook stopped)
  walhook demo                    a throwaway PostgreSQL, a sample table, a receiver, the admin page
  walhook bench [flags]           the end-to-end benchmark against the machine's own ceilings (-h: flags)
  walhook version                 version and build info

-config defaults to $WALHOOK_CONFIG, else ./config.toml.
`

// gcPercent is walhook's GOGC unless the environment sets one. Each
// delivery allocates about 12 KB around a live heap of a few tens of MB:
// collecting at 200 % instead of 100 % saved about 10 % (4-17 %) of the
// CPU per delivery, for 20-60 MB more peak heap
// (docs/bench-records/2026-11-29-13-gogc.txt and -15-bigtx-1m.txt).
const gcPercent = 200

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "walhook:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stderr)
	case "demo":
		return demoCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case bench.HelperCommand: // walhook bench's subprocesses; in no usage text
		return benchHelperCommand(ctx, args[1:], stdout, stderr)
	case "check":
		return checkCommand(ctx, args[1:], stdout, stderr)
	case "teardown":
		return teardownCommand(ctx, args[1:], stdout, stderr)
	case "compact":
		return compactCommand(ctx, args[1:], stdout, stderr)
	case "move-store":
		return moveStoreCommand(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return versionCommand(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "walhook: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
}

func versionCommand(w io.Writer) error {
	fmt.Fprintf(w, "walhook %s\n", version)
	if bi, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprintf(w, "go %s\n", bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.time" {
				fmt.Fprintf(w, "%s %s\n", s.Key, s.Value)
			}
		}
	}
	return nil
}

// configFlag adds -config with its default.
func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("WALHOOK_CONFIG")
	if def == "" {
		def = "config.toml"
	}
	return fs.String("config", def, "config file")
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	return nil
}
