package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func runCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return serve(ctx, *path, cfg, logger, 0)
}

// serve runs walhook on cfg, read from path, until ctx ends: in terms, each
// as the store's leader (runTerm); SIGHUP reloads the config. concurrency
// is AppOptions.Concurrency.
func serve(ctx context.Context, path string, cfg *Config, logger *slog.Logger, concurrency int) error {
	var app atomic.Pointer[App] // the running term's; nil between terms
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			next, err := LoadConfig(path)
			if err != nil {
				logger.Error("reload: invalid config, keeping the old one", "err", err)
				continue
			}
			a := app.Load()
			if a == nil {
				logger.Error("reload: walhook waits to lead the store; the config is read again when it does")
				continue
			}
			if err := a.Reload(next); err != nil {
				logger.Error("reload failed, keeping the old config", "err", err)
				continue
			}
			logger.Info("config reloaded", "webhooks", len(next.Webhooks))
		}
	}()
	for first := true; ; first = false {
		if !first {
			// Each term reads the config afresh: SIGHUP may have changed it.
			if next, err := LoadConfig(path); err == nil {
				cfg = next
			} else {
				logger.Error("invalid config, keeping the one in use", "err", err)
			}
		}
		lost, err := runTerm(ctx, cfg, logger, concurrency, first, &app)
		switch {
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
			return nil // stopped while waiting to lead: a normal stop
		case !lost || ctx.Err() != nil:
			return err
		}
		logger.Warn("this walhook no longer leads the store: it stopped reading and delivering, and waits to lead again", "err", err)
		select { // a term that cannot start is not retried in a loop
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
	}
}

// runTerm runs walhook once: for a store in PostgreSQL, from when it leads
// the store until it stops or its leader lock is lost (lost is then true;
// also when a later term cannot start, so that the process waits to lead
// again rather than exit: the store may still be recovering).
// Each term has a registry of its own, as its App registers its metrics
// anew.
func runTerm(ctx context.Context, cfg *Config, logger *slog.Logger, concurrency int, first bool, app *atomic.Pointer[App]) (lost bool, err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	leader, err := lead(ctx, cfg, logger, reg, first)
	if err != nil {
		return false, err
	}
	if leader != nil {
		defer leader.Release()
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-leader.Lost():
				logger.Error("stopping: another walhook may lead the store now", "err", leader.Err())
				if a := app.Load(); a != nil {
					// At once, beside the term's end: the next leader sends
					// them. (Not waited for: a worker may wait on the store.)
					go a.queue.StopDelivering()
				}
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	a, err := NewApp(cfg, AppOptions{Logger: logger, Registry: reg, Concurrency: concurrency})
	if err != nil {
		return leader != nil && !first, err
	}
	app.Store(a)
	defer app.Store(nil)
	err = a.Run(ctx)
	if leader != nil && leader.Err() != nil {
		return true, leader.Err()
	}
	return false, err
}
