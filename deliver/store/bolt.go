package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"walhook/cdc"
)

// The bbolt layout. Events are stored once; each webhook has its own
// bucket of deliveries keyed by a big-endian sequence (commit order) and an
// index of its completed deliveries, oldest first, for retention.
var (
	bucketEvents   = []byte("events")   // event id → refcount (4 bytes) + cdc.Event (eventcodec.go)
	bucketWebhooks = []byte("webhooks") // name → the webhook's definition (the caller's bytes)
	bucketActive   = []byte("active")   // name → JSON override (config webhooks switched off by a 410 or the admin API)
	bucketStats    = []byte("stats")    // name → JSON Counters
	bucketMeta     = []byte("meta")
	keyDurable     = []byte("durable_lsn")
	keyBackfill    = []byte("backfill") // the state of the backfill under way
)

func queueBucket(name string) []byte { return []byte("q/" + name) }
func doneBucket(name string) []byte  { return []byte("d/" + name) }

// chartBucket holds a webhook's chart: slot (2 bytes) → encoded Bucket.
func chartBucket(name string) []byte { return []byte("c/" + name) }

// FileName is the store's file in its directory.
const FileName = "walhook.db"

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

const (
	// A map that starts large spares the remaps (each waits for every
	// reader) while a store grows; only pages in use are resident.
	initialMap = 256 << 20
	// loadedEvents are events read back kept for the other webhooks that
	// want them.
	loadedEvents = 2048
	// appendFill is the bbolt FillPercent of buckets whose keys only grow.
	appendFill = 0.9
	// releaseEvery is how often commits drop the store's mapped pages from
	// the resident set (see dropMapped).
	releaseEvery = time.Second
)

// scanDropEvery is how many records a full scan of a queue reads between
// dropping the store's mapped pages (dropMapped): a few megabytes.
var scanDropEvery = 1 << 16

// dropChunk is how many deliveries one transaction of DropQueue deletes.
var dropChunk = 10000

// BoltOptions configure a Bolt store.
type BoltOptions struct {
	Retention  int                   // completed deliveries kept per webhook; failed ones stay until delivered again
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // the store's metrics; may be nil
}

// Bolt is the store in one bbolt file, walhook.db in its directory. Commit
// is called by one goroutine at a time; the other methods by any.
type Bolt struct {
	db        *bolt.DB
	retention int
	log       *slog.Logger
	durable   atomic.Uint64                  // as stored by the latest commit that stored one
	loaded    *lru.Cache[string, *cdc.Event] // events read back, shared by the webhooks that load them
	released  time.Time                      // when Commit last dropped the mapped pages; committer only
	scratch   scratch                        // the keys and values of the commit under way; s.mu held

	mu   sync.Mutex
	done map[string]int // deliveries in each webhook's retention index, once counted

	// Tests: DuringWindow is called inside Window's read transaction;
	// AfterDropChunk after each of DropQueue's transactions (an error stops
	// the drop). Set them before the store is in use.
	DuringWindow   func()
	AfterDropChunk func() error
}

// OpenBolt opens (or creates) the store in dir.
func OpenBolt(dir string, o BoltOptions) (*Bolt, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	var durable uint64
	db, err := openFile(filepath.Join(dir, FileName), &bolt.Options{Timeout: 5 * time.Second, InitialMmapSize: initialMap}, func(tx *bolt.Tx) (err error) {
		for _, b := range [][]byte{bucketEvents, bucketWebhooks, bucketActive, bucketStats, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if v := tx.Bucket(bucketMeta).Get(keyDurable); len(v) == 8 {
			durable = binary.BigEndian.Uint64(v)
		}
		webhookDefs(tx) // pages a damaged file garbled fault here, where it is guarded
		return nil
	})
	if err != nil {
		return nil, err
	}
	loaded, err := lru.New[string, *cdc.Event](loadedEvents)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Bolt{db: db, retention: o.Retention, log: o.Logger, loaded: loaded, done: map[string]int{}, released: time.Now()}
	s.durable.Store(durable)
	if o.Registerer != nil {
		s.register(o.Registerer)
	}
	return s, nil
}

// Close closes the file.
func (s *Bolt) Close() error { return s.db.Close() }

// Durable is the WAL position stored with the latest commit that stored
// one: the EndLSN of the latest transaction whose deliveries are on disk.
func (s *Bolt) Durable() uint64 { return s.durable.Load() }

// Path is the store file's path.
func (s *Bolt) Path() string { return s.db.Path() }

// register exports the store file's size and the part of it bbolt holds
// free, for reuse: what `walhook compact` would give back.
func (s *Bolt) register(r prometheus.Registerer) {
	path, db := s.db.Path(), s.db
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "walhook_store_file_bytes", Help: "Size of the store file.",
		}, func() float64 {
			fi, err := os.Stat(path)
			if err != nil {
				return 0
			}
			return float64(fi.Size())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "walhook_store_free_bytes", Help: "Bytes of the store file's free pages, reused by later writes; walhook compact gives them back while walhook is stopped.",
		}, func() float64 { return float64(db.Stats().FreeAlloc) }),
	} {
		if err := r.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				s.log.Error("register store metric", "err", err)
			}
		}
	}
}

// ReadWebhookDefs returns the definitions PutWebhook stored, read from the
// store in dir without changing it, waiting up to wait for a walhook that
// holds it (ErrBusy). A store that does not exist yet has none.
func ReadWebhookDefs(dir string, wait time.Duration) (map[string][]byte, error) {
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out map[string][]byte
	db, err := openFile(path, &bolt.Options{ReadOnly: true, Timeout: wait}, func(tx *bolt.Tx) error {
		out = webhookDefs(tx)
		return nil
	})
	if errors.Is(err, ErrBusy) {
		return nil, ErrBusy
	}
	if err != nil {
		return nil, err
	}
	db.Close()
	return out, nil
}

func webhookDefs(tx *bolt.Tx) map[string][]byte {
	out := map[string][]byte{}
	if b := tx.Bucket(bucketWebhooks); b != nil {
		b.ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	}
	return out
}

// openFile opens the store file at path and runs first in a transaction
// of it, read-only if o is. A damaged file is an error that says so and
// what to do, not a crash: bbolt reads pages through a memory map, where a
// page past the end of a file cut short is a SIGBUS and a garbled one a
// panic, so the open runs with faults turned into panics, recovered here.
// Later reads are not guarded.
func openFile(path string, o *bolt.Options, first func(*bolt.Tx) error) (db *bolt.DB, err error) {
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
			db, err = nil, damaged(path, why)
		}
	}()
	db, err = bolt.Open(path, 0o600, &opened)
	switch {
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, damaged(path, err.Error())
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open store %s: %w", path, ErrBusy)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// A file shorter than its header says was cut short (a copy, a
	// restore): its last pages would be read past the end.
	var want int64
	db.View(func(tx *bolt.Tx) error { want = tx.Size(); return nil })
	if fi, err := os.Stat(path); err == nil && fi.Size() < want {
		db.Close()
		return nil, damaged(path, fmt.Sprintf("it is %d bytes long and its header says %d: it was cut short", fi.Size(), want))
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

func damaged(path, why string) error {
	return fmt.Errorf("the store %s is %w (%s): restore it from a backup, or move it away to start with an empty one,"+
		" which loses the deliveries queued in it and the webhooks made through the admin API", path, ErrDamaged, why)
}

// Compact rewrites the store in dir into a new file without its free pages
// and puts that in place of the old one: bbolt reuses the pages a drained
// backlog freed but never hands them back to the file system. It returns
// the file's size before and after. It needs the store to itself: ErrBusy
// while a walhook holds it.
func Compact(dir string) (before, after int64, err error) {
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	src, err := openFile(path, &bolt.Options{Timeout: time.Second}, func(*bolt.Tx) error { return nil })
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

// derefEventN drops n references to an event at once and deletes it with
// the last; cur is a cursor of b.
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

// orderedCursor finds keys asked for mostly in the order they are stored,
// as a read in queue order asks for its deliveries' events: it tries the
// key after its position before it searches from the root, a step that
// costs a fraction of a search.
type orderedCursor struct {
	c  *bolt.Cursor
	at []byte // the key c is on; nil before the first find
}

// find positions the cursor on key and reports whether key is there.
func (o *orderedCursor) find(key []byte) (v []byte, ok bool) {
	if o.at != nil && bytes.Compare(key, o.at) > 0 {
		k, v := o.c.Next()
		if bytes.Equal(k, key) {
			o.at = k
			return v, true
		}
	}
	k, v := o.c.Seek(key)
	o.at = k
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
