package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

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
	var app atomic.Pointer[App] // the running term's; nil between terms
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			next, err := LoadConfig(*path)
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
			if next, err := LoadConfig(*path); err == nil {
				cfg = next
			} else {
				logger.Error("invalid config, keeping the one in use", "err", err)
			}
		}
		lost, err := runTerm(ctx, cfg, logger, first, &app)
		if !lost || ctx.Err() != nil {
			return err
		}
		logger.Warn("the store's leader lock was lost: walhook stopped reading and delivering, and waits to lead again", "err", err)
	}
}

// runTerm runs walhook once: for a store in PostgreSQL, from when it leads
// the store until it stops or its leader lock is lost (lost is then true).
// Each term has a registry of its own, as its App registers its metrics
// anew.
func runTerm(ctx context.Context, cfg *Config, logger *slog.Logger, first bool, app *atomic.Pointer[App]) (lost bool, err error) {
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
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	a, err := NewApp(cfg, AppOptions{Logger: logger, Registry: reg})
	if err != nil {
		return false, err
	}
	app.Store(a)
	defer app.Store(nil)
	err = a.Run(ctx)
	if leader != nil && leader.Err() != nil {
		return true, leader.Err()
	}
	return false, err
}
