package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"

	"walhook/deliver"
)

// compactCommand is `walhook compact`: the store rewritten without the
// free pages a drained backlog left, while walhook is stopped.
func compactCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("compact", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := configFlag(flags)
	dir := flags.String("store", "", "compact the store in this directory instead of the config's [store] dir (the config is then not read)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *dir == "" {
		cfg, err := LoadConfig(*path)
		if err != nil {
			return err
		}
		if cfg.Store.Kind == storePostgres {
			return fmt.Errorf("compact: the store is in PostgreSQL, whose autovacuum gives space back; nothing to do")
		}
		*dir = cfg.Store.Dir
	}
	before, after, err := deliver.CompactStore(*dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(stdout, "no store in %s: nothing to compact\n", *dir)
		return nil
	case errors.Is(err, deliver.ErrStoreBusy):
		return fmt.Errorf("compact: %w: stop walhook first; nothing was changed", err)
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "compacted the store in %s: %s → %s\n", *dir, mb(before), mb(after))
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
