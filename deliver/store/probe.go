package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// Probe writes the stored WAL position back as it is, fsynced: the
// smallest write transaction there is. It fails as a commit would while
// the file system is full or read-only, and costs a page or two, not a
// batch, so the committer can try it every second while it waits.
func (s *Bolt) Probe() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v := bytes.Clone(meta.Get(keyDurable)) // the mapped bytes may move while the transaction writes
		if len(v) != 8 {
			v = make([]byte, 8) // read as 0, as no position at all is
		}
		return meta.Put(keyDurable, v)
	})
}
