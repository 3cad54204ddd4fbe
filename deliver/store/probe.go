package store

import (
	"bytes"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Probe writes the stored WAL position back as it is, fsynced: the
// smallest write transaction there is. It fails as a commit would while
// the file system is read-only, and costs a page or two, not a batch, so
// the committer can try it every second while it waits. That write goes
// to a free page of the file when there is one, also on a full disk: the
// probe also asks the file system for probeRoom, as a commit that grows
// the file would.
func (s *Bolt) Probe() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v := bytes.Clone(meta.Get(keyDurable)) // the mapped bytes may move while the transaction writes
		if len(v) != 8 {
			v = make([]byte, 8) // read as 0, as no position at all is
		}
		return meta.Put(keyDurable, v)
	})
	if err != nil {
		return err
	}
	return roomFor(filepath.Dir(s.db.Path()), probeRoom)
}

// probeRoom is the free space a probe asks for: about what a commit of the
// events that wait while the store fails grows the file by.
const probeRoom = 1 << 20
