//go:build !linux

package deliver

// releaseMapped is a no-op where madvise is not used.
func (q *Queue) releaseMapped() {}
