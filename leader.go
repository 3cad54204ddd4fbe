package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"walhook/admin"
	"walhook/deliver/store"
)

// lead returns at once for a store on the local disk (one walhook per
// store: bbolt's file lock sees to it). For a store in PostgreSQL, which
// several walhooks may share, it waits until this one holds the store's
// leader lock: only the leader reads the slot and delivers. Meanwhile the
// admin address answers as a standby: /healthz 200, /readyz 503 naming the
// leader, /metrics with walhook_leader 0.
//
// At the first start a store that cannot be reached is an error; later (a
// leader lock lost with its session, when the store's server restarts) it
// tries again every few seconds until the store is back.
func lead(ctx context.Context, cfg *Config, logger *slog.Logger, reg prometheus.Registerer, first bool) (*store.Leader, error) {
	if cfg.Store.Kind != storePostgres {
		return nil, nil
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "walhook_leader", Help: "1 when this walhook leads the walhooks sharing its store (reads the slot and delivers), 0 while it waits as a standby."})
	reg.MustRegister(gauge)
	var standby atomic.Pointer[string]
	msg := "standby: waiting for the store's leader lock"
	standby.Store(&msg)
	stop, err := serveStandby(cfg, logger, reg, &standby)
	if err != nil {
		return nil, err
	}
	defer stop()
	host, _ := os.Hostname()
	name := fmt.Sprintf("%s %s pid %d", host, *cfg.Admin.Listen, os.Getpid())
	var told string
	waiting := func(h store.Holder) {
		msg := "standby: the leader is " + h.String()
		standby.Store(&msg)
		if msg != told {
			logger.Info("waiting as a standby: another walhook leads the store", "leader", h.String())
			told = msg
		}
	}
	l, err := store.AcquireLeader(ctx, cfg.Store.DSN, cfg.Store.Schema, name, waiting)
	for err != nil && !first && ctx.Err() == nil {
		msg := "standby: the store cannot be reached: " + err.Error()
		standby.Store(&msg)
		logger.Error("the store cannot be reached; trying again in 5 s", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		l, err = store.AcquireLeader(ctx, cfg.Store.DSN, cfg.Store.Schema, name, waiting)
	}
	if err != nil {
		return nil, err
	}
	gauge.Set(1)
	logger.Info("this walhook leads the store", "schema", cfg.Store.Schema)
	return l, nil
}

// serveStandby serves a standby's admin routes on the admin address until
// stop is called, which frees the address for the leader's admin server.
func serveStandby(cfg *Config, logger *slog.Logger, reg prometheus.Registerer, state *atomic.Pointer[string]) (stop func(), err error) {
	listen := *cfg.Admin.Listen
	if listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	gatherer, _ := reg.(prometheus.Gatherer)
	srv := &http.Server{Handler: admin.New(admin.Options{
		Token: cfg.Admin.Token, Logger: logger, Gatherer: gatherer,
		Ready: func() error { return errors.New(*state.Load()) },
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
