package deliver

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// releaseMapped drops the store's mapped pages from the process's resident
// set. bbolt reads through a shared, read-only mmap of its file, so reading
// a long backlog or a big transaction would otherwise count the whole file
// as RSS. The pages stay in the page cache and fault back in when read
// again. The read transaction keeps bbolt from remapping meanwhile.
func (q *Queue) releaseMapped() {
	q.db.View(func(tx *bolt.Tx) error {
		if size := tx.Size(); size > 0 {
			syscall.Syscall(syscall.SYS_MADVISE, q.db.Info().Data, uintptr(size), syscall.MADV_DONTNEED)
		}
		return nil
	})
}
