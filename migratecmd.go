package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"walhook/deliver/store"
)

// moveStoreCommand is `walhook move-store`: the bbolt store of one walhook
// copied into the PostgreSQL store its config names, walhook stopped.
func moveStoreCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("move-store", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := configFlag(flags)
	from := flags.String("from", "", "the bbolt store's directory (default: the config's [store] dir)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	if cfg.Store.Kind != storePostgres {
		return fmt.Errorf(`move-store: the config's store.kind is %q: set kind = "postgres" and its dsn first; nothing was changed`, cfg.Store.Kind)
	}
	if *from == "" {
		*from = cfg.Store.Dir
	}
	if _, err := os.Stat(filepath.Join(*from, store.FileName)); err != nil {
		return fmt.Errorf("move-store: no bbolt store in %s (%w); nothing was changed", *from, err)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := store.OpenBolt(*from, store.BoltOptions{Retention: cfg.Store.Retention, Logger: logger})
	if errors.Is(err, store.ErrBusy) {
		return fmt.Errorf("move-store: %w: stop walhook first; nothing was changed", err)
	}
	if err != nil {
		return err
	}
	defer b.Close()
	// The leader lock, without waiting for it: a walhook that runs on the
	// PostgreSQL store already must be stopped first.
	lockCtx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	var holder *store.Holder
	l, err := store.AcquireLeader(lockCtx, cfg.Store.DSN, cfg.Store.Schema, "move-store", func(h store.Holder) { holder = &h; giveUp() })
	if holder != nil {
		return fmt.Errorf("move-store: a walhook leads the PostgreSQL store (%v): stop every walhook first; nothing was changed", holder)
	}
	if err != nil {
		return err
	}
	defer l.Release()
	p, err := store.OpenPostgres(ctx, store.PostgresOptions{DSN: cfg.Store.DSN, Schema: cfg.Store.Schema, Retention: cfg.Store.Retention, Logger: logger})
	if err != nil {
		return err
	}
	defer p.Close()
	moved, err := store.MoveToPostgres(ctx, b, p)
	if err != nil {
		return fmt.Errorf("move-store: %w; nothing was changed", err)
	}
	fmt.Fprintf(stdout, "moved the store in %s into schema %s at %s: %v\n", *from, cfg.Store.Schema, store.RedactDSN(cfg.Store.DSN), moved)
	fmt.Fprintf(stdout, "%s is left as it was: remove it once walhook runs on the new store\n", filepath.Join(*from, store.FileName))
	return nil
}
