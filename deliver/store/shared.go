package store

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Several walhooks share a store in PostgreSQL. One of them leads (Leader):
// it reads the slot and writes the events and their deliveries. Every one
// of them delivers: the deliveries are split by entity id into Partitions
// parts, and each walhook holds the leases of its share of the parts
// (Claim), renewed every claimEvery for Lease. A walhook delivers only the
// parts it holds, so an entity's deliveries go out from one walhook at a
// time, in commit order. A walhook that dies (SIGKILL, its host gone)
// stops renewing; its parts' leases run out and the others take them, with
// the deliveries still pending in them. A walhook that cannot reach the
// store stops delivering its parts before their leases can run out (by its
// own clock, from before its latest renewal), so no part is ever delivered
// by two. They tell each other of new deliveries and changed webhooks with
// NOTIFY (Listen).

// Lease is how long a walhook holds its parts without renewing them: after
// a walhook dies, its pending deliveries wait up to this long (and a
// claimEvery more) for another to take them.
const Lease = 10 * time.Second

// claimEvery is how often a walhook renews its leases and looks for its
// share, and how long a renewal may take; stopEarly is how long before its
// leases end, by its own clock, a walhook that could not renew them starts
// to stop delivering: time enough for a renewal that does not answer to
// fail and for the requests under way to end or be aborted (see
// deliver.Queue.Own).
const (
	claimEvery = 2 * time.Second
	stopEarly  = 5 * time.Second
)

// Instance is a walhook sharing the store, as it says in its latest renewal.
type Instance struct {
	ID     string    `json:"id"`     // made at its start; unique
	Name   string    `json:"name"`   // host, admin address and pid
	Admin  string    `json:"admin"`  // its admin address
	Config string    `json:"config"` // a digest of its config's webhooks (they must agree)
	Leader bool      `json:"leader"` // it reads the slot
	SeenAt time.Time `json:"seen_at"`
	Parts  int       `json:"parts"` // the partitions whose leases it holds
}

// Notes between walhooks sharing a store (see Listen).
const noteWebhooks = "webhooks"

func seqNote(seq uint64) string { return "seq " + strconv.FormatUint(seq, 10) }

// Note is what a walhook sharing the store told the others.
type Note struct {
	Seq      uint64 // deliveries up to this sequence were queued; 0: none
	Webhooks bool   // the API's webhooks or a switch-off changed
}

// notify tells the walhooks listening, when tx commits.
func (s *Postgres) notify(ctx context.Context, tx pgx.Tx, note string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, s.origin+" "+note)
	return err
}

// execNoting runs one statement and tells the others note.
func (s *Postgres) execNoting(note, query string, args ...any) error {
	return s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.sql(query), args...); err != nil {
			return err
		}
		return s.notify(ctx, tx, note)
	})
}

// Listen calls f with what the other walhooks sharing the store tell (what
// this one tells, it knows), until ctx ends. When it starts to listen, also
// after a lost connection, it calls f with every note set: what was told
// while it did not listen is lost.
func (s *Postgres) Listen(ctx context.Context, f func(Note)) {
	for ctx.Err() == nil {
		err := s.listen(ctx, f)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("store: listening to the other walhooks failed; again in 1 s", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Postgres) listen(ctx context.Context, f func(Note)) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // LISTEN stays with its session: not for the pool
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	f(Note{Seq: math.MaxUint64, Webhooks: true})
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		origin, note, _ := strings.Cut(n.Payload, " ")
		if origin == s.origin {
			continue
		}
		switch seq, ok := strings.CutPrefix(note, "seq "); {
		case ok:
			if v, err := strconv.ParseUint(seq, 10, 64); err == nil {
				f(Note{Seq: v})
			}
		case note == noteWebhooks:
			f(Note{Webhooks: true})
		}
	}
}

// Probe writes a row of the store's meta table: whether the store takes
// writes again after commits failed.
func (s *Postgres) Probe() error {
	return s.exec(`INSERT INTO {s}.meta (key, value) VALUES ('probe', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, []byte{})
}

// Claim holds this walhook's share of the partitions until ctx ends: the
// partitions divided by the walhooks alive (their renewals within a
// Lease), rounded up. It calls own with the set it holds whenever that
// changes, before it takes new ones and after it has given some up in the
// store. own must return only when this walhook has stopped delivering
// the parts it no longer holds (their attempts filed, their outcomes
// stored where the store allows): only then may another take them. At its
// end it calls own(0) and gives every part and its entry up. me says who
// this walhook is; leader is read at each renewal.
func (s *Postgres) Claim(ctx context.Context, me Instance, leader func() bool, own func(Parts)) {
	var (
		held     Parts
		deadline time.Time // by this clock, when held's leases may end
		failing  bool
	)
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			own(0)
			s.unclaim(me.ID)
			return
		case <-tick.C:
		}
		tick.Reset(claimEvery)
		start := time.Now()
		me.Leader = leader()
		renewed, live, err := s.renew(me)
		if err == nil {
			deadline, failing = start.Add(Lease-stopEarly), false
			if renewed != held {
				// Leases that ran out before this walhook renewed them: it
				// should have stopped delivering them already. Said loudly.
				if lost := held &^ renewed; lost != 0 {
					s.log.Error("store: the leases of partitions ran out before this walhook renewed them; another may deliver them now", "parts", lost.List())
				}
				held = renewed
				own(held)
			}
			fair := (Partitions + live - 1) / max(live, 1)
			switch n := held.Len(); {
			case n < fair:
				got, err := s.take(me.ID, fair-n)
				if err != nil {
					s.log.Warn("store: taking partitions failed", "err", err)
				} else if got != 0 {
					held |= got
					own(held)
				}
			case n > fair:
				give := held.highest(n - fair)
				held &^= give
				own(held)
				if err := s.release(me.ID, give); err != nil {
					s.log.Warn("store: giving partitions up failed; their leases run out instead", "err", err)
				}
			}
			continue
		}
		if !failing {
			s.log.Error("store: renewing this walhook's partitions failed", "err", err)
			failing = true
		}
		if held != 0 && time.Now().After(deadline) {
			s.log.Error("store: this walhook stops delivering its partitions: it could not renew their leases, and another walhook may take them", "parts", held.Len())
			held = 0
			own(0)
		}
	}
}

// highest is the n highest partitions of p.
func (p Parts) highest(n int) Parts {
	var out Parts
	for i := Partitions - 1; i >= 0 && n > 0; i-- {
		if p.Has(i) {
			out |= 1 << i
			n--
		}
	}
	return out
}

// renew says this walhook is alive, renews the leases it holds and
// returns them with the count of walhooks alive.
func (s *Postgres) renew(me Instance) (held Parts, live int, err error) {
	err = s.inTxWithin(claimEvery, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {s}.instances (id, name, admin, config, leader, seen_at) VALUES ($1, $2, $3, $4, $5, now())
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, admin = excluded.admin, config = excluded.config, leader = excluded.leader, seen_at = now()`),
			me.ID, me.Name, me.Admin, me.Config, me.Leader); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.sql(`DELETE FROM {s}.instances WHERE seen_at < now() - interval '1 hour'`)); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, s.sql(`SELECT count(*) FROM {s}.instances WHERE seen_at > now() - $1::interval`), Lease.String()).Scan(&live); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, s.sql(`UPDATE {s}.partitions SET lease_until = now() + $2::interval WHERE owner = $1 AND lease_until > now() RETURNING part`), me.ID, Lease.String())
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[int16])
		held = partsOf(list)
		return err
	})
	return held, live, err
}

// take takes up to n partitions nobody holds, or whose leases ran out.
func (s *Postgres) take(id string, n int) (Parts, error) {
	var got Parts
	err := s.inTxWithin(claimEvery, func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.sql(`UPDATE {s}.partitions SET owner = $1, lease_until = now() + $3::interval WHERE part IN (
			SELECT part FROM {s}.partitions WHERE owner IS NULL OR lease_until <= now() ORDER BY part LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING part`),
			id, n, Lease.String())
		if err != nil {
			return err
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[int16])
		got = partsOf(list)
		return err
	})
	return got, err
}

// release gives partitions up for the others to take at once.
func (s *Postgres) release(id string, p Parts) error {
	return s.exec(`UPDATE {s}.partitions SET owner = NULL, lease_until = NULL WHERE owner = $1 AND part = ANY($2)`, id, p.List())
}

// unclaim gives every partition of a walhook that stops up, and its entry.
func (s *Postgres) unclaim(id string) {
	err := s.exec(`UPDATE {s}.partitions SET owner = NULL, lease_until = NULL WHERE owner = $1`, id)
	if err == nil {
		err = s.exec(`DELETE FROM {s}.instances WHERE id = $1`, id)
	}
	if err != nil {
		s.log.Warn("store: giving this walhook's partitions up failed; their leases run out instead", "err", err)
	}
}

// Instances are the walhooks alive sharing the store (they renewed their
// leases within a Lease), by name.
func (s *Postgres) Instances() ([]Instance, error) {
	ctx, cancel := callContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, s.sql(`SELECT i.id, i.name, i.admin, i.config, i.leader, i.seen_at,
		(SELECT count(*) FROM {s}.partitions p WHERE p.owner = i.id AND p.lease_until > now())
		FROM {s}.instances i WHERE i.seen_at > now() - $1::interval ORDER BY i.name`), Lease.String())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Instance
	for rows.Next() {
		var in Instance
		if err := rows.Scan(&in.ID, &in.Name, &in.Admin, &in.Config, &in.Leader, &in.SeenAt, &in.Parts); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, rows.Err()
}
