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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	leader, err := lead(ctx, cfg, logger, reg)
	if err != nil {
		return err
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
	app, err := NewApp(cfg, AppOptions{Logger: logger, Registry: reg})
	if err != nil {
		return err
	}
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
			if err := app.Reload(next); err != nil {
				logger.Error("reload failed, keeping the old config", "err", err)
				continue
			}
			logger.Info("config reloaded", "webhooks", len(next.Webhooks))
		}
	}()
	err = app.Run(ctx)
	if leader != nil && leader.Err() != nil && err == nil {
		err = leader.Err() // stopped because the lock was lost: systemd starts it again, as a standby
	}
	return err
}
