package cdc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// SnapshotIndex is the index of a snapshot's first row: snapshot events
// take their ids from the snapshot's WAL position and indexes from here
// up, which no transaction's changes reach, so they never share an id with
// a change.
const SnapshotIndex = 0x80000000

// snapshotChunk is the most rows handed to each at once.
const snapshotChunk = 1000

var snapshotSeq atomic.Int64

// ReadSnapshot reads every row of tables ("schema.table") as of one point
// of the WAL and hands them to each as create events, in chunks of
// transactions that are never durable on their own (EndLSN 0). The point
// is a temporary replication slot's consistent point: every transaction
// committed before it is in the rows, none committed at or after it. Its
// creation waits, as any slot's, for the transactions open at the time.
// ready is called with the point before the first row is read; each row's
// event id is the point and SnapshotIndex plus its number.
//
// Tables are read in the order of their names, each in the order of its
// key where it has a primary key or replica identity index. each gets
// with every chunk the position after it; reading from that position
// again, under a new snapshot, goes on where the chunk ended (a table
// without such a key starts over).
func ReadSnapshot(ctx context.Context, dsn string, tables []string, from SnapshotPosition, ready func(ctx context.Context, at uint64) error, each func(*Tx, SnapshotPosition) error) (rows int, err error) {
	names, err := parseTables(tables)
	if err != nil {
		return 0, err
	}
	if from.Table != "" {
		start, err := parseTable(from.Table)
		if err != nil {
			return 0, err
		}
		i := slices.IndexFunc(names, func(t tableName) bool { return t.String() >= start.String() })
		if i < 0 {
			return 0, nil
		}
		if names[i] != start {
			from.After = nil // that table is gone from the list: the next one from its start
		}
		names = names[i:]
	}
	pc, err := ReplicationConfig(dsn, "walhook")
	if err != nil {
		return 0, err
	}
	repl, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return 0, fmt.Errorf("replication connect: %w", err)
	}
	defer repl.Close(context.Background()) // drops the temporary slot
	slot := fmt.Sprintf("walhook_snapshot_%d_%d", os.Getpid(), snapshotSeq.Add(1))
	created, err := pglogrepl.CreateReplicationSlot(ctx, repl, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary: true, SnapshotAction: "EXPORT_SNAPSHOT", Mode: pglogrepl.LogicalReplication,
	})
	if err != nil {
		return 0, fmt.Errorf("create a temporary slot for the snapshot: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(created.ConsistentPoint)
	if err != nil {
		return 0, err
	}
	at := uint64(lsn)
	takenAt := time.Now().UTC()

	conn, err := connect(ctx, dsn, sessionParams) // values in the stream's text forms
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	// The exported snapshot lives while the replication connection stays
	// idle: the transaction adopts it at once.
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return 0, err
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+strings.ReplaceAll(created.SnapshotName, "'", "''")+"'"); err != nil {
		return 0, fmt.Errorf("adopt the snapshot: %w", err)
	}
	// Creating the slot wrote WAL at its point, which makes the other
	// slots' walsenders report their position past it soon, also on a
	// quiet database (TestSnapshotPointPassedWhenQuiet).
	var st slotState
	if err := st.readCatalog(ctx, conn); err != nil {
		return 0, err
	}
	types := pgtype.NewMap()
	cols := make([][]snapshotColumn, len(names))
	keys := make([]snapshotKey, len(names))
	for i, t := range names {
		if cols[i], keys[i], err = snapshotColumns(ctx, conn, t, types, st.types); err != nil {
			return 0, err
		}
	}
	if err := ready(ctx, at); err != nil {
		return 0, err
	}
	index := uint32(SnapshotIndex)
	for i, t := range names {
		var after []string
		if i == 0 {
			after = from.After
		}
		n, err := readTable(ctx, conn, t, cols[i], keys[i], after, at, takenAt, &index, each)
		rows += n
		if err != nil {
			return rows, fmt.Errorf("read %s: %w", t, err)
		}
	}
	_, err = conn.Exec(ctx, "COMMIT")
	return rows, err
}

// SnapshotPosition is where reading a snapshot stands: in Table
// ("schema.table"), after the row whose key columns have the text values
// After; nil: from the table's start.
type SnapshotPosition struct {
	Table string   `json:"table"`
	After []string `json:"after,omitempty"`
}

// snapshotColumn is a column as pgoutput sends it.
type snapshotColumn struct {
	name string
	oid  uint32
	conv converter
	typ  string // see Event.Types
}

// snapshotKey is the key a table's changes carry, as column names and
// their places among the columns read; ordered when rows can be read in
// its order (a primary key or replica identity index).
type snapshotKey struct {
	names   []string
	at      []int
	ordered bool
}

// snapshotColumns lists the columns of t that pgoutput sends (generated
// ones it leaves out) and the key its changes carry: the primary key, else
// the replica identity index, else under REPLICA IDENTITY FULL every
// column; all in column order.
func snapshotColumns(ctx context.Context, conn *pgx.Conn, t tableName, types *pgtype.Map, cat typeCatalog) ([]snapshotColumn, snapshotKey, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname::text, a.atttypid::int8, c.relreplident::text,
		       coalesce(a.attnum = ANY ((SELECT indkey FROM pg_index WHERE indrelid = c.oid AND indisprimary)::int2[]), false),
		       coalesce(a.attnum = ANY ((SELECT indkey FROM pg_index WHERE indrelid = c.oid AND indisreplident)::int2[]), false)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, t.quoted())
	if err != nil {
		return nil, snapshotKey{}, fmt.Errorf("%s: %w", t, err)
	}
	var (
		cols             []snapshotColumn
		pk, ri, all      snapshotKey
		name, identity   string
		oid              int64
		inPK, inIdentity bool
	)
	add := func(k *snapshotKey) {
		k.names = append(k.names, name)
		k.at = append(k.at, len(cols)-1)
	}
	if _, err := pgx.ForEachRow(rows, []any{&name, &oid, &identity, &inPK, &inIdentity}, func() error {
		cols = append(cols, snapshotColumn{name: name, oid: uint32(oid), conv: converterFor(types, cat, uint32(oid)), typ: textType(cat, uint32(oid))})
		add(&all)
		if inPK {
			add(&pk)
		}
		if inIdentity {
			add(&ri)
		}
		return nil
	}); err != nil {
		return nil, snapshotKey{}, fmt.Errorf("%s: %w", t, err)
	}
	switch {
	case len(cols) == 0:
		return nil, snapshotKey{}, fmt.Errorf("%s: no columns", t)
	case len(pk.names) > 0:
		pk.ordered = true
		return cols, pk, nil
	case identity == "i" && len(ri.names) > 0:
		ri.ordered = true
		return cols, ri, nil
	case identity == "f":
		return cols, all, nil
	}
	return nil, snapshotKey{}, fmt.Errorf("%s has no primary key or replica identity: its rows have no key", t)
}

// readTable hands the rows of t to each as create events, in chunks, with
// the position after each chunk: in key order after the key values after
// when the key is ordered, else all of them in no order.
func readTable(ctx context.Context, conn *pgx.Conn, t tableName, cols []snapshotColumn, key snapshotKey, after []string, at uint64, takenAt time.Time, index *uint32, each func(*Tx, SnapshotPosition) error) (int, error) {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = pgx.Identifier{c.name}.Sanitize()
	}
	keyCols := make([]string, len(key.names))
	for i, k := range key.names {
		keyCols[i] = pgx.Identifier{k}.Sanitize()
	}
	sql := "SELECT " + strings.Join(names, ", ") + " FROM " + t.quoted()
	var params [][]byte
	var oids []uint32
	if key.ordered {
		if len(after) == len(key.names) {
			marks := make([]string, len(after))
			for i, v := range after {
				marks[i] = fmt.Sprintf("$%d", i+1)
				params = append(params, []byte(v))
				oids = append(oids, cols[key.at[i]].oid)
			}
			sql += " WHERE (" + strings.Join(keyCols, ", ") + ") > (" + strings.Join(marks, ", ") + ")"
		}
		sql += " ORDER BY " + strings.Join(keyCols, ", ")
	}
	// Values in text form, as pgoutput sends them, for the same converters.
	rr := conn.PgConn().ExecParams(ctx, sql, params, oids, nil, nil)
	var types map[string]string // see Event.Types
	for _, c := range cols {
		if c.typ != "" {
			if types == nil {
				types = map[string]string{}
			}
			types[c.name] = c.typ
		}
	}
	n := 0
	tx := &Tx{CommitLSN: at, CommitTime: takenAt}
	pos := SnapshotPosition{Table: t.String()}
	flush := func() error {
		if len(tx.Events) == 0 {
			return nil
		}
		err := each(tx, pos)
		tx = &Tx{CommitLSN: at, CommitTime: takenAt}
		return err
	}
	for rr.NextRow() {
		if *index == 0 {
			rr.Close()
			return n, errors.New("more rows than a snapshot's ids can number")
		}
		vals := rr.Values()
		data := make(map[string]any, len(cols))
		for i, c := range cols {
			if i >= len(vals) || vals[i] == nil {
				data[c.name] = nil
				continue
			}
			v, err := c.conv(vals[i])
			if err != nil {
				v = safeText(vals[i])
			}
			data[c.name] = v
		}
		if key.ordered {
			pos.After = make([]string, len(key.at))
			for i, c := range key.at {
				pos.After[i] = string(vals[c])
			}
		}
		tx.Events = append(tx.Events, Event{
			ID: EventID(at, *index), CommitLSN: at, Index: *index, CommitTime: takenAt,
			Schema: t.schema, Table: t.table, Action: ActionCreate, Data: data, Key: key.names, Types: types,
		})
		*index++
		n++
		if len(tx.Events) == snapshotChunk {
			if err := flush(); err != nil {
				rr.Close()
				return n, err
			}
		}
	}
	if _, err := rr.Close(); err != nil {
		return n, err
	}
	return n, flush()
}
