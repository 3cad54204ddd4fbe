package store

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// dropMapped drops the store's mapped pages from the process's resident
// set. bbolt reads through a shared, read-only mmap of its file, so reading
// a long backlog or a big transaction would otherwise count the whole file
// as RSS. The pages stay in the page cache and fault back in when read
// again. The caller's open transaction keeps bbolt from remapping meanwhile.
func dropMapped(tx *bolt.Tx) {
	if size := tx.Size(); size > 0 {
		syscall.Syscall(syscall.SYS_MADVISE, tx.DB().Info().Data, uintptr(size), syscall.MADV_DONTNEED)
	}
}
