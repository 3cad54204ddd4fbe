package store

import (
	"fmt"
	"os"
	"syscall"
)

// roomFor reserves n bytes in a scratch file in dir and gives them back:
// it fails, as a commit that grows the store's file would, on a file
// system without that room. (A write into the file's free pages passes on
// a full disk; a batch that needs the file to grow does not.)
func roomFor(dir string, n int64) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil && err != syscall.EOPNOTSUPP {
		return fmt.Errorf("reserve %d bytes beside the store: %w", n, err)
	}
	return nil
}
