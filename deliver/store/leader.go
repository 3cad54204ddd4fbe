package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaderKey is the first half of the advisory lock that names the leader
// of the walhooks sharing a store ("walh"); the second is the hash of the
// store's schema, so that stores in other schemas of the same database do
// not contend.
const leaderKey = 0x77616c68

// Leader intervals: how often a walhook waiting for the lock tries again,
// how often the leader checks that its lock's session is alive, and how
// long that check may take. A check that times out closes the connection
// (pgx), and so gives the lock up: it is long, so that a store that stalls
// for a few seconds (a checkpoint, a loaded host) does not hand the lead
// over while this walhook is alive.
const (
	leaderRetry   = time.Second
	leaderCheck   = 2 * time.Second
	leaderTimeout = 20 * time.Second
)

// Leader is the session-level advisory lock in the store's database that
// makes one of the walhooks sharing a store the one that reads the slot
// and writes events. PostgreSQL releases it when the leader's session
// ends, however it ends (a SIGKILL, a crash of its host that the server's
// TCP keepalive notices), and the next walhook waiting takes it.
type Leader struct {
	conn     *pgx.Conn
	lost     chan struct{}
	lostErr  error
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// Holder describes the session that holds the leader lock.
type Holder struct {
	Name string // its application_name: "walhook <name>"
	Addr string // its client address
	PID  int    // its backend's process id
}

func (h Holder) String() string {
	return fmt.Sprintf("%s from %s (backend pid %d)", h.Name, h.Addr, h.PID)
}

// AcquireLeader connects to the store's database as "walhook <name>" and
// waits until it holds the leader lock of schema, calling waiting with the
// current holder (when it can tell) at each try that fails.
func AcquireLeader(ctx context.Context, dsn, schema, name string, waiting func(Holder)) (*Leader, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store dsn %s: %w", RedactDSN(dsn), err)
	}
	cfg.RuntimeParams["application_name"] = "walhook " + name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store at %s: %w", RedactDSN(dsn), err)
	}
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, leaderKey, schema).Scan(&got); err != nil {
			conn.Close(context.Background())
			return nil, fmt.Errorf("store: take the leader lock: %w", err)
		}
		if got {
			break
		}
		if waiting != nil {
			if h, err := holder(ctx, conn, schema); err == nil {
				waiting(h)
			}
		}
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return nil, ctx.Err()
		case <-time.After(leaderRetry):
		}
	}
	l := &Leader{conn: conn, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go l.watch()
	return l, nil
}

// holder reads who holds the leader lock of schema.
func holder(ctx context.Context, conn *pgx.Conn, schema string) (Holder, error) {
	var h Holder
	var addr *string
	err := conn.QueryRow(ctx, `SELECT a.application_name, host(a.client_addr), a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objid = hashtext($2)::oid AND l.objsubid = 2`,
		leaderKey, schema).Scan(&h.Name, &addr, &h.PID)
	if addr != nil {
		h.Addr = *addr
	} else {
		h.Addr = "a local socket"
	}
	return h, err
}

// watch checks the lock's session until Release; when it fails, the lock
// may be another's already, and Lost says so.
func (l *Leader) watch() {
	defer close(l.done)
	t := time.NewTicker(leaderCheck)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaderTimeout)
		err := l.conn.Ping(ctx)
		cancel()
		if err != nil {
			l.lostErr = fmt.Errorf("the store's leader lock is lost with its session: %w", err)
			close(l.lost)
			return
		}
	}
}

// Lost is closed when the lock's session has failed: the walhook must stop
// reading and writing, as another may lead now.
func (l *Leader) Lost() <-chan struct{} { return l.lost }

// Err says why the lock was lost, after Lost is closed.
func (l *Leader) Err() error {
	select {
	case <-l.lost:
		return l.lostErr
	default:
		return nil
	}
}

// Release gives the lock up by ending its session.
func (l *Leader) Release() error {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.conn.Close(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil // the session ends with its connection anyway
	}
	return err
}
