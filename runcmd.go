package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
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
	return serve(ctx, *path, cfg, logger, 0)
}

// serve runs walhook on cfg, read from path, until ctx ends; SIGHUP
// reloads the config. concurrency is AppOptions.Concurrency. With a store
// in PostgreSQL the App leads the walhooks sharing it, or delivers its
// share beside the leader until it may (App.Run).
func serve(ctx context.Context, path string, cfg *Config, logger *slog.Logger, concurrency int) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := NewApp(cfg, AppOptions{Logger: logger, Registry: reg, Concurrency: concurrency})
	if err != nil {
		return err
	}
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
			if err := a.Reload(next); err != nil {
				logger.Error("reload failed, keeping the old config", "err", err)
				continue
			}
			logger.Info("config reloaded", "webhooks", len(next.Webhooks))
		}
	}()
	return a.Run(ctx)
}
