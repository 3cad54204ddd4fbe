package main

// The two ways this package's tests run walhook: in-process (startApp,
// NewApp and App.Run, when a test reads the App's queue or metrics) and as
// a child process of the built binary (startProcess, when a test kills it,
// signals it or reads what it prints). What is not walhook's own, the
// build and the child process, is testkit's.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"walhook/internal/testkit"
)

// inProcess is walhook run in the test's process, as `walhook run` runs
// it, until stop or the test's end.
type inProcess struct {
	t      *testing.T
	app    *App
	cancel context.CancelFunc
	done   chan error
}

// startApp builds an App from cfg and opts and runs it; stop (at the
// latest the test's end) stops it and fails the test if Run failed.
func startApp(t *testing.T, cfg *Config, opts AppOptions) *inProcess {
	t.Helper()
	app, err := NewApp(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &inProcess{t: t, app: app, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- app.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// waitReady waits up to 30 s for the App to be ready.
func (r *inProcess) waitReady() {
	r.t.Helper()
	waitFor(r.t, "walhook to be ready", 30*time.Second, func() bool { return r.app.ready() == nil })
}

// stop cancels Run and waits for it; once stopped, stop does nothing.
func (r *inProcess) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("walhook run: %v", err)
	}
	r.cancel = nil
}

// walhookBinary builds walhook once per test binary.
func walhookBinary(t *testing.T) string { return testkit.Walhook(t) }

// process is walhook run from its binary as a child process.
type process struct{ *testkit.Process }

// startProcess starts walhook with args, its output appended to logPath.
func startProcess(t *testing.T, logPath string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, logPath, nil, args...)
}

// startProcessEnv is startProcess with env added to the environment.
func startProcessEnv(t *testing.T, logPath string, env []string, args ...string) *process {
	t.Helper()
	return &process{testkit.StartProcess(t, logPath, env, walhookBinary(t), args...)}
}

// start starts walhook again after kill.
func (p *process) start() { p.Start() }

// kill kills walhook with SIGKILL and waits for its end.
func (p *process) kill() { p.Kill() }

// runItemsWalhook writes a config for dsn with the entity item (the table
// public.items of itemsSchema) and hooks, starts walhook on it with env
// added to its environment, and waits until it is ready. Its store, logs
// and output (walhook.log) are under dir.
func runItemsWalhook(t *testing.T, dsn, hooks string, env []string) (p *process, admin, dir string) {
	t.Helper()
	admin, dir = freeAddr(t), t.TempDir()
	path := filepath.Join(dir, "config.toml")
	text := postgresSection(dsn) + fmt.Sprintf("[admin]\nlisten = %q\n[[entity]]\nname = \"item\"\ntable = \"public.items\"\n", admin) + hooks
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startProcessEnv(t, filepath.Join(dir, "walhook.log"), env, "run", "-config", path)
	waitReady(t, admin)
	return p, admin, dir
}

// waitReady waits up to a minute for the walhook whose admin listens at
// admin to answer /readyz with 200.
func waitReady(t *testing.T, admin string) {
	t.Helper()
	waitFor(t, "/readyz 200", time.Minute, func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })
}

// httpStatus GETs url and returns the status, 0 when unreachable.
func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
