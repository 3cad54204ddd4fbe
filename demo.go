package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/internal/pgcluster"
)

const demoSchema = `
CREATE TABLE employees (
	id         serial PRIMARY KEY,
	name       text NOT NULL,
	email      text NOT NULL,
	salary     numeric(10,2),
	active     boolean NOT NULL DEFAULT true,
	updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE employees REPLICA IDENTITY FULL;
`

const demoConfig = `
[postgres]
dsn = %q
slot = "walhook_demo"
publication = "walhook_demo"

[store]
dir = %q

[log]
dir = %q

[admin]
listen = %q

[[entity]]
name = "employee"
table = "public.employees"
url = "http://example.com/employees/{id}"

[[webhook]]
name = "demo-receiver"
url = %q
events = ["employee"]
secret = %q
retry_mode = "test"
`

// demoCommand runs walhook end to end on a throwaway cluster.
func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	changes := fs.Int("changes", 0, "stop after this many webhooks were received (0: until Ctrl-C)")
	interval := fs.Duration("interval", time.Second, "time between two changes")
	listen := fs.String("admin", "127.0.0.1:8080", "admin page address (a free port is taken when busy)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	fmt.Fprintln(stdout, "demo: starting a throwaway PostgreSQL (initdb takes a few seconds)...")
	cluster, err := pgcluster.Start(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		cluster.Close()
		fmt.Fprintln(stdout, "demo: cluster stopped and removed")
	}()
	dsn, err := cluster.CreateDatabase(ctx, "demo")
	if err != nil {
		return err
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, demoSchema); err != nil {
		return fmt.Errorf("demo: create table: %w", err)
	}

	secret := "whsec_" + randomBase64(24)
	received := make(chan string, 16)
	recv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	receiver := &http.Server{Handler: demoReceiver(secret, received), ReadHeaderTimeout: 5 * time.Second}
	go receiver.Serve(recv)
	defer receiver.Close()

	if ln, err := net.Listen("tcp", *listen); err == nil {
		ln.Close()
	} else {
		*listen = "127.0.0.1:0"
	}
	dir, err := os.MkdirTemp("", "walhook-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	text := fmt.Sprintf(demoConfig, dsn, dir+"/data", dir+"/logs", *listen, "http://"+recv.Addr().String()+"/hook", secret)
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		return err
	}
	app, err := NewApp(cfg, AppOptions{Logger: logger})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	// Changes made before the slot exists would not be replicated.
	for app.ready() != nil {
		select {
		case err := <-done:
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
	fmt.Fprintf(stdout, "demo: admin page http://%s/   receiver http://%s/hook   Ctrl-C to stop\n", app.AdminAddr(), recv.Addr())

	changing := make(chan struct{})
	go func() {
		defer close(changing)
		demoChanges(ctx, db, *interval, stdout)
	}()
	// The connection is closed by a deferred call: stop using it first.
	defer func() {
		cancel()
		<-changing
	}()
	n := 0
	for {
		select {
		case line := <-received:
			fmt.Fprintln(stdout, line)
			n++
			if *changes > 0 && n >= *changes {
				cancel()
				return <-done
			}
		case err := <-done:
			return err
		}
	}
}

// demoChanges inserts, updates and deletes employees, one change per tick.
func demoChanges(ctx context.Context, db *pgx.Conn, every time.Duration, stdout io.Writer) {
	names := []string{"Ada Lovelace", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson"}
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		var sql string
		var args []any
		switch i % 3 {
		case 0:
			name := names[(i/3)%len(names)]
			sql, args = `INSERT INTO employees (name, email, salary) VALUES ($1, $2, 4200.50)`,
				[]any{name, strings.ToLower(strings.Fields(name)[0]) + "@example.com"}
		case 1:
			sql = `UPDATE employees SET salary = salary + 100, updated_at = now() WHERE id = (SELECT max(id) FROM employees)`
		case 2:
			if i%6 == 5 {
				sql = `DELETE FROM employees WHERE id = (SELECT min(id) FROM employees)`
			} else {
				sql = `UPDATE employees SET email = upper(email) WHERE id = (SELECT max(id) FROM employees)`
			}
		}
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			if ctx.Err() == nil {
				fmt.Fprintln(stdout, "demo: change failed:", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// demoReceiver verifies the Standard Webhooks signature of each request and
// reports it on out.
func demoReceiver(secret string, out chan<- string) http.Handler {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, ts := r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp")
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%s.", id, ts)
		mac.Write(body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		verdict := "signature INVALID"
		status := http.StatusUnauthorized
		for _, sig := range strings.Fields(r.Header.Get("Webhook-Signature")) {
			if hmac.Equal([]byte(sig), []byte(want)) {
				verdict, status = "signature verified", http.StatusOK
			}
		}
		w.WriteHeader(status)
		out <- fmt.Sprintf("received %s id=%s %s\n  %s", r.Header.Get("X-Walhook-Event"), id, verdict, body)
	})
}

func randomBase64(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("crypto/rand failed"))
	}
	return base64.StdEncoding.EncodeToString(b)
}
