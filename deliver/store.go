package deliver

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"walhook/cdc"
)

// The bbolt layout. Events are stored once; each webhook has its own
// bucket of deliveries keyed by a big-endian sequence (commit order) and an
// index of its completed deliveries, oldest first, for retention.
var (
	bucketEvents   = []byte("events")   // event id → refcount (4 bytes) + cdc.Event (eventcodec.go)
	bucketWebhooks = []byte("webhooks") // name → JSON Webhook (source api)
	bucketActive   = []byte("active")   // name → JSON activeOverride (config webhooks switched off by a 410 or the admin API)
	bucketStats    = []byte("stats")    // name → JSON callStats
	bucketMeta     = []byte("meta")
	keyDurable     = []byte("durable_lsn")
	keyBackfill    = []byte("backfill") // the state of the backfill under way (see Queue.StartBackfill)
)

func queueBucket(name string) []byte { return []byte("q/" + name) }
func doneBucket(name string) []byte  { return []byte("d/" + name) }

// Delivery statuses.
const (
	StatusPending = "pending"
	StatusSuccess = "success"
	StatusFailed  = "failed"
)

// Status bytes lead each stored delivery, so counting needs no decoding.
const (
	recPending = 'p'
	recSuccess = 's'
	recFailed  = 'f'
)

func statusByte(s string) byte {
	switch s {
	case StatusSuccess:
		return recSuccess
	case StatusFailed:
		return recFailed
	}
	return recPending
}

func statusName(b byte) string {
	switch b {
	case recSuccess:
		return StatusSuccess
	case recFailed:
		return StatusFailed
	}
	return StatusPending
}

// record is a stored delivery.
type record struct {
	Status   string `json:"-"`
	EventID  string `json:"event_id"`
	Event    string `json:"event"`
	Entity   string `json:"entity,omitempty"`
	EntityID string `json:"entity_id,omitempty"`
	// PrevEntityID: the entity id before the UPDATE that changed it; the
	// delivery is ordered after that id's earlier ones too.
	PrevEntityID string    `json:"prev_entity_id,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	Due          time.Time `json:"due,omitzero"` // of the next attempt, after a failed one
	Attempts     []Attempt `json:"attempts,omitempty"`
}

// decodeJSONEvent reads the JSON form of a stored event (see eventcodec.go).
func decodeJSONEvent(v []byte) (*cdc.Event, error) {
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber() // keep int64 values exact
	ev := &cdc.Event{}
	if err := d.Decode(ev); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

// derefEvent drops one reference to an event and deletes it with the last.
func derefEvent(b *bolt.Bucket, id string) error { return derefEventN(b, b.Cursor(), id, 1) }

// derefEventN drops n references at once; cur is a cursor of b.
func derefEventN(b *bolt.Bucket, cur *bolt.Cursor, id string, n uint32) error {
	v, ok := seek(cur, []byte(id))
	if !ok || len(v) < 4 {
		return nil
	}
	refs := binary.BigEndian.Uint32(v)
	if refs <= n {
		return cur.Delete()
	}
	nv := bytes.Clone(v)
	binary.BigEndian.PutUint32(nv, refs-n)
	return b.Put([]byte(id), nv)
}

// seek positions cur on key and reports whether key is there.
func seek(cur *bolt.Cursor, key []byte) (v []byte, ok bool) {
	k, v := cur.Seek(key)
	return v, bytes.Equal(k, key)
}

// refEvent adds one reference to a stored event.
func refEvent(b *bolt.Bucket, id string) error {
	v := b.Get([]byte(id))
	if len(v) < 4 {
		return fmt.Errorf("event %s: not stored", id)
	}
	nv := bytes.Clone(v)
	binary.BigEndian.PutUint32(nv, binary.BigEndian.Uint32(v)+1)
	return b.Put([]byte(id), nv)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// callStats are the persisted counters of a webhook.
type callStats struct {
	LatestStatus    int       `json:"latest_status"`
	SuccessfulCalls int64     `json:"successful_calls"`
	TotalCalls      int64     `json:"total_calls"`
	LastAttemptAt   time.Time `json:"last_attempt_at"`
}

// activeOverride records that a config webhook was switched off by a 410
// or through the admin API; it holds until the webhook's URL changes in the
// config, or the admin API switches it on.
type activeOverride struct {
	Active bool   `json:"active"`
	URL    string `json:"url"`
}

// switchedOff reports whether the store keeps config webhook name, at this
// url, switched off.
func switchedOff(tx *bolt.Tx, name, url string) bool {
	var o activeOverride
	v := tx.Bucket(bucketActive).Get([]byte(name))
	return v != nil && json.Unmarshal(v, &o) == nil && o.URL == url && !o.Active
}

// keepSwitchedOff stores config webhook name as switched off while its URL
// stays url.
func keepSwitchedOff(tx *bolt.Tx, name, url string) error {
	v, _ := json.Marshal(activeOverride{Active: false, URL: url})
	return tx.Bucket(bucketActive).Put([]byte(name), v)
}

// ErrStoreBusy is returned by ReadWebhooks while a running walhook holds
// the store.
var ErrStoreBusy = errors.New("the store is in use (is walhook running?)")

// ReadWebhooks returns the webhooks created through the admin API, read
// from the store under dir without changing it. A store that does not
// exist yet has none.
func ReadWebhooks(dir string, wait time.Duration) ([]Webhook, error) {
	path := filepath.Join(dir, "walhook.db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []Webhook
	db, err := openStore(path, &bolt.Options{ReadOnly: true, Timeout: wait}, func(tx *bolt.Tx) (err error) {
		out, err = storedWebhooks(tx)
		return err
	})
	if errors.Is(err, ErrStoreBusy) {
		return nil, ErrStoreBusy
	}
	if err != nil {
		return nil, err
	}
	db.Close()
	return out, nil
}

// openStore opens the store file at path and runs first in a transaction
// of it, read-only if o is. A damaged file is an error that says so and
// what to do, not a crash: bbolt reads pages through a memory map, where a
// page past the end of a file cut short is a SIGBUS and a garbled one a
// panic, so the open runs with faults turned into panics, recovered here.
// Later reads are not guarded.
func openStore(path string, o *bolt.Options, first func(*bolt.Tx) error) (db *bolt.DB, err error) {
	// Should bolt.Open panic, its file's lock is released here (the
	// memory map it leaves keeps the file open).
	var file *os.File
	opened := *o
	opened.OpenFile = func(name string, flag int, mode os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, mode)
		file = f
		return f, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			} else if file != nil {
				syscall.Flock(int(file.Fd()), syscall.LOCK_UN)
				file.Close()
			}
			why := fmt.Sprint(r)
			if _, ok := r.(interface{ Addr() uintptr }); ok {
				why = "a page could not be read: the file is shorter than its pages say, or unreadable"
			}
			db, err = nil, damagedStore(path, why)
		}
	}()
	db, err = bolt.Open(path, 0o600, &opened)
	switch {
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, damagedStore(path, err.Error())
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrStoreBusy)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// A file shorter than its header says was cut short (a copy, a
	// restore): its last pages would be read past the end.
	var want int64
	db.View(func(tx *bolt.Tx) error { want = tx.Size(); return nil })
	if fi, err := os.Stat(path); err == nil && fi.Size() < want {
		db.Close()
		return nil, damagedStore(path, fmt.Sprintf("it is %d bytes long and its header says %d: it was cut short", fi.Size(), want))
	}
	if o.ReadOnly {
		err = db.View(first)
	} else {
		err = db.Update(first)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// CompactStore rewrites the store under dir into a new file without its
// free pages and puts that in place of the old one: bbolt reuses the pages
// a drained backlog freed but never hands them back to the file system.
// It returns the file's size before and after. It needs the store to
// itself: ErrStoreBusy while a walhook holds it.
func CompactStore(dir string) (before, after int64, err error) {
	path := filepath.Join(dir, "walhook.db")
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	src, err := openStore(path, &bolt.Options{Timeout: time.Second}, func(*bolt.Tx) error { return nil })
	if err != nil {
		return 0, 0, err
	}
	// The old file stays locked until the new one is in its place.
	defer src.Close()
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return 0, 0, fmt.Errorf("compact: %w", err)
	}
	err = bolt.Compact(dst, src, 64<<20)
	if err == nil {
		err = dst.Sync() // one fsync at the end instead of one per commit
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return 0, 0, fmt.Errorf("compact %s: %w", path, err)
	}
	nfi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	return fi.Size(), nfi.Size(), nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrStoreDamaged marks a store file walhook cannot open as it is.
var ErrStoreDamaged = errors.New("damaged")

func damagedStore(path, why string) error {
	return fmt.Errorf("the store %s is %w (%s): restore it from a backup, or move it away to start with an empty one,"+
		" which loses the deliveries queued in it and the webhooks made through the admin API", path, ErrStoreDamaged, why)
}

// storedWebhooks decodes the webhooks created through the admin API.
func storedWebhooks(tx *bolt.Tx) ([]Webhook, error) {
	b := tx.Bucket(bucketWebhooks)
	if b == nil {
		return nil, nil
	}
	var out []Webhook
	err := b.ForEach(func(k, v []byte) error {
		var w Webhook
		if err := json.Unmarshal(v, &w); err != nil {
			return fmt.Errorf("webhook %s: %w", k, err)
		}
		out = append(out, w)
		return nil
	})
	return out, err
}
