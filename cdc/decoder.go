package cdc

import (
	"bytes"
	"fmt"
	"log/slog"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// relation is what a pgoutput Relation message tells about a table, with a
// converter per column picked once rather than per value.
type relation struct {
	ID      uint32
	Schema  string
	Table   string
	Columns []column
	Key     []string          // replica identity columns, in column order
	Types   map[string]string // see Event.Types
}

// column is one column of a relation.
type column struct {
	Name string
	OID  uint32
	Key  bool
	conv converter
}

// decoder turns pgoutput messages into transactions. It is not safe for
// concurrent use; the replication loop owns it.
type decoder struct {
	relations map[uint32]*relation
	types     *pgtype.Map
	// primaryKeys holds, by schema.table, the primary key columns as the
	// session found them; pgoutput flags every column as key under
	// REPLICA IDENTITY FULL, which makes a poor entity id.
	primaryKeys map[string][]string
	// catalog is the session's view of domains and array types.
	catalog typeCatalog
	// refresh reads primaryKeys and catalog again, when a type made after
	// they were read turns up, or a table under REPLICA IDENTITY FULL
	// without a known primary key (nil: never).
	refresh func() (map[string][]string, typeCatalog, error)
	log     *slog.Logger

	// chunkSize is the most events a Tx handed out holds; a bigger
	// transaction goes out in several (see Tx).
	chunkSize int

	inTx  bool
	lastN int    // events in the last transaction: the next one's first guess
	tx    *Tx    // the chunk being filled
	index uint32 // of the next event, counted across the transaction's chunks
	full  *Tx    // a full chunk waiting to be handed out
}

// defaultChunkSize bounds the events of one transaction held in memory.
const defaultChunkSize = 5000

func newDecoder(log *slog.Logger) *decoder {
	return &decoder{relations: make(map[uint32]*relation), types: pgtype.NewMap(), log: log, chunkSize: defaultChunkSize}
}

// decode handles one pgoutput message. It returns a chunk of the
// transaction when the message was its Commit (the last chunk, with no
// events when nothing published changed) or when the message's change did
// not fit in the chunk being filled (a full chunk, EndLSN 0).
func (d *decoder) decode(walData []byte) (*Tx, error) {
	if err := d.apply(walData); err != nil {
		return nil, err
	}
	tx := d.full
	d.full = nil
	return tx, nil
}

func (d *decoder) apply(walData []byte) error {
	msg, err := pglogrepl.Parse(walData)
	if err != nil {
		return fmt.Errorf("parse pgoutput message: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.TypeMessage:
		d.newType(m)
	case *pglogrepl.RelationMessage:
		d.relation(m)
	case *pglogrepl.BeginMessage:
		// Protocol v1 sends only committed transactions, and Begin
		// already carries the commit's LSN and time: event ids are
		// final from the first change on.
		d.inTx, d.index = true, 0
		d.tx = &Tx{CommitLSN: uint64(m.FinalLSN), CommitTime: m.CommitTime.UTC()}
		if d.lastN > 0 {
			// Transactions of an application tend to be alike: sized
			// once, the events are not copied as the slice grows.
			d.tx.Events = make([]Event, 0, min(d.lastN, d.chunkSize))
		}
	case *pglogrepl.CommitMessage:
		if !d.inTx {
			return fmt.Errorf("commit at %s without begin", m.CommitLSN)
		}
		tx := d.tx
		d.inTx, d.tx = false, nil
		if uint64(m.CommitLSN) != tx.CommitLSN {
			return fmt.Errorf("commit at %s but its begin announced %s", m.CommitLSN, pglogrepl.LSN(tx.CommitLSN))
		}
		tx.EndLSN = uint64(m.TransactionEndLSN)
		d.full = tx
		d.lastN = int(d.index)
	case *pglogrepl.InsertMessage:
		return d.insert(m)
	case *pglogrepl.UpdateMessage:
		return d.update(m)
	case *pglogrepl.DeleteMessage:
		return d.delete(m)
	case *pglogrepl.TruncateMessage:
		return d.truncate(m)
	default:
		// Origin messages carry nothing walhook needs.
	}
	return nil
}

// newType reads the catalog again when pgoutput announces a type (it does
// before a relation with a column of a non-built-in type) that was made
// after the catalog was read: a domain or an array of an enum added by a
// migration while walhook streams is then converted as it should be, not
// as text until the next connection.
func (d *decoder) newType(m *pglogrepl.TypeMessage) {
	if d.catalog.known[m.DataType] || d.refresh == nil {
		return
	}
	d.reread("a new type", m.Namespace+"."+m.Name)
	if d.catalog.known == nil {
		d.catalog.known = map[uint32]bool{}
	}
	// Asked once, also when the catalog could not be read or the type
	// was dropped since.
	d.catalog.known[m.DataType] = true
}

// reread reads primaryKeys and catalog again for what (a type, a table);
// a failure is logged and the old ones stay.
func (d *decoder) reread(why, what string) {
	pks, cat, err := d.refresh()
	if err != nil {
		d.log.Warn(why+": reading the catalog failed; the one read at the connection stays until the next", "name", what, "err", err)
		return
	}
	d.primaryKeys, d.catalog = pks, cat
}

func (d *decoder) relation(m *pglogrepl.RelationMessage) {
	r := &relation{ID: m.RelationID, Schema: m.Namespace, Table: m.RelationName, Columns: make([]column, len(m.Columns))}
	for i, c := range m.Columns {
		if typ := textType(d.catalog, c.DataType); typ != "" {
			if r.Types == nil {
				r.Types = map[string]string{}
			}
			r.Types[c.Name] = typ
		}
		key := c.Flags&1 != 0
		r.Columns[i] = column{Name: c.Name, OID: c.DataType, Key: key, conv: converterFor(d.types, d.catalog, c.DataType)}
		if key {
			r.Key = append(r.Key, c.Name)
		}
	}
	if m.ReplicaIdentity == 'f' {
		// Every column is the key pgoutput flags; the primary key makes
		// the entity id. One added since the connection (pgoutput sends
		// the relation again after such a change) is looked up.
		name := r.Schema + "." + r.Table
		if _, ok := d.primaryKeys[name]; !ok && d.refresh != nil {
			d.reread("a table under REPLICA IDENTITY FULL without a primary key", name)
		}
		if pk, ok := d.primaryKeys[name]; ok {
			r.Key = pk
		}
	}
	d.relations[m.RelationID] = r
}

func (d *decoder) rel(id uint32) (*relation, error) {
	if !d.inTx {
		return nil, fmt.Errorf("change for relation %d outside a transaction", id)
	}
	r, ok := d.relations[id]
	if !ok {
		return nil, fmt.Errorf("change for unknown relation %d", id)
	}
	return r, nil
}

// event appends a change to the chunk being filled. A full chunk is set
// aside for decode to hand out first, so the transaction's last chunk,
// handed out at Commit, is never empty once an earlier one went out.
func (d *decoder) event(r *relation, action string) *Event {
	tx := d.tx
	// (A truncate of many tables may overfill a chunk; one is set aside
	// per message at most.)
	if len(tx.Events) >= d.chunkSize && d.full == nil {
		d.full = tx
		d.tx = &Tx{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Events: make([]Event, 0, d.chunkSize)}
	}
	i := d.index
	d.index++
	d.tx.Events = append(d.tx.Events, Event{
		ID: EventID(d.tx.CommitLSN, i), CommitLSN: d.tx.CommitLSN, Index: i, CommitTime: d.tx.CommitTime,
		Schema: r.Schema, Table: r.Table, Action: action, Key: r.Key, Types: r.Types,
	})
	return &d.tx.Events[len(d.tx.Events)-1]
}

func (d *decoder) insert(m *pglogrepl.InsertMessage) error {
	r, err := d.rel(m.RelationID)
	if err != nil {
		return err
	}
	e := d.event(r, ActionCreate)
	e.Data = d.row(r, m.Tuple, nil, false)
	return nil
}

func (d *decoder) update(m *pglogrepl.UpdateMessage) error {
	r, err := d.rel(m.RelationID)
	if err != nil {
		return err
	}
	e := d.event(r, ActionModify)
	whole := m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld
	if m.OldTuple != nil {
		e.Old = d.row(r, m.OldTuple, nil, !whole)
	}
	e.Data = d.row(r, m.NewTuple, e.Old, false)
	if whole {
		e.Changed = changed(r, m.OldTuple, m.NewTuple)
	}
	return nil
}

func (d *decoder) delete(m *pglogrepl.DeleteMessage) error {
	r, err := d.rel(m.RelationID)
	if err != nil {
		return err
	}
	e := d.event(r, ActionDelete)
	e.Old = d.row(r, m.OldTuple, nil, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey)
	e.Data = e.Old
	return nil
}

func (d *decoder) truncate(m *pglogrepl.TruncateMessage) error {
	for _, id := range m.RelationIDs {
		r, err := d.rel(id)
		if err != nil {
			return err
		}
		d.event(r, ActionTruncate)
	}
	return nil
}

// row decodes a tuple. keyOnly keeps only the key columns (a 'K' tuple
// sends the others as nulls). An unchanged TOAST value is taken from old
// when old has it, and otherwise left out.
func (d *decoder) row(r *relation, t *pglogrepl.TupleData, old map[string]any, keyOnly bool) map[string]any {
	if t == nil {
		return nil
	}
	out := make(map[string]any, len(t.Columns))
	for i, c := range t.Columns {
		if i >= len(r.Columns) {
			break
		}
		col := &r.Columns[i]
		if keyOnly && !col.Key {
			continue
		}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			out[col.Name] = nil
		case pglogrepl.TupleDataTypeToast:
			if v, ok := old[col.Name]; ok {
				out[col.Name] = v
			}
		case pglogrepl.TupleDataTypeText:
			v, err := col.conv(c.Data)
			if err != nil {
				d.log.Debug("value kept as text", "table", r.Schema+"."+r.Table, "column", col.Name, "oid", col.OID, "err", err)
				v = safeText(c.Data)
			}
			out[col.Name] = v
		default:
			// Binary values are only sent when asked for; walhook never asks.
			d.log.Debug("binary tuple value ignored", "table", r.Schema+"."+r.Table, "column", col.Name)
		}
	}
	return out
}

// changed lists, in column order, the columns whose value differs between
// a whole old tuple and the new one; an unchanged TOAST value did not
// change. Comparing the text forms is exact and cheaper than the values.
func changed(r *relation, old, new *pglogrepl.TupleData) []string {
	var out []string
	for i, n := range new.Columns {
		if i >= len(r.Columns) || i >= len(old.Columns) {
			break
		}
		o := old.Columns[i]
		if n.DataType == pglogrepl.TupleDataTypeToast || o.DataType == pglogrepl.TupleDataTypeToast {
			continue
		}
		if n.DataType != o.DataType || !bytes.Equal(n.Data, o.Data) {
			out = append(out, r.Columns[i].Name)
		}
	}
	return out
}
