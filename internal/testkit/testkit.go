// Package testkit holds the pieces every package's tests need, once: a
// log destination tests can read while the code under test writes, a free
// loopback address, a condition wait with a deadline (WaitFor,
// Eventually), PostgreSQL connections, a real HTTP receiver recording
// what it gets (Receiver), the Standard Webhooks signature a receiver
// checks, a real SMTP server keeping what it is sent, and walhook's binary
// built once and run as a child process (Walhook, Process).
package testkit

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// SyncBuffer is a log destination safe for concurrent writers and readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
