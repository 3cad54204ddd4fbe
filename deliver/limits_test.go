package deliver_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
	"walhook/deliver"
)

// rawReceiver answers every request with 500 and headerBytes of headers,
// written as raw bytes on the hijacked connection, as a hostile receiver
// would.
func rawReceiver(t *testing.T, headerBytes int) *httptest.Server {
	t.Helper()
	pad := strings.Repeat("a", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		bw := bufio.NewWriterSize(conn, 64<<10)
		bw.WriteString("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n")
		for i := 0; i*(len(pad)+14) < headerBytes; i++ {
			fmt.Fprintf(bw, "X-Pad-%05d: %s\r\n", i, pad)
		}
		bw.WriteString("Location: http://example.com/" + strings.Repeat("l", 8000) + "\r\n\r\nboom")
		bw.Flush()
		_ = buf
	}))
	t.Cleanup(srv.Close)
	return srv
}

// storedBytes is the sum of every key and value in the store in dir,
// whose Queue is closed: what the records take, without bbolt's pages.
func storedBytes(t *testing.T, dir string) int {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "walhook.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	var walk func(b *bolt.Bucket)
	walk = func(b *bolt.Bucket) {
		b.ForEach(func(k, v []byte) error {
			n += len(k) + len(v)
			if v == nil {
				walk(b.Bucket(k))
			}
			return nil
		})
	}
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			n += len(name)
			walk(b)
			return nil
		})
	})
	return n
}

// TestHostileResponseHeaders: a receiver answering 500 with a megabyte of
// headers (more than the client reads) or 48 KiB of them (less) grows the
// store by a few KiB per attempt, not by what it sent.
func TestHostileResponseHeaders(t *testing.T) {
	t.Parallel()
	const deliveries = 20
	grow := map[int]float64{}
	for _, size := range []int{0, 48 << 10, 1 << 20} {
		srv := rawReceiver(t, size)
		e := newEnv(t, []string{"h"})
		e.setHooks(t, hook("h", srv.URL, func(w *deliver.Webhook) { w.MaxAttempts = 1 }))
		var evs []cdc.Event
		for i := range deliveries {
			evs = append(evs, event(100, uint32(i), int64(i), "a@x"))
		}
		e.write(t, txOf(100, evs...))
		var ds []deliver.Delivery
		waitFor(t, 20*time.Second, "every delivery failed", func() bool {
			ds, _ = e.q.Deliveries("h", deliveries, deliver.StatusFailed)
			return len(ds) == deliveries
		})
		att := ds[0].Attempts[0]
		hdr, _ := json.Marshal(att.ResponseHeaders)
		if len(hdr) > 5<<10 {
			t.Errorf("%d bytes of headers sent: %d bytes kept, want at most 5 KiB", size, len(hdr))
		}
		if len(att.Error) > 1100 {
			t.Errorf("%d bytes of headers sent: error of %d bytes kept: %.200q", size, len(att.Error), att.Error)
		}
		switch size {
		case 48 << 10:
			if att.Status != 500 || att.ResponseHeaders.Get(deliver.DroppedHeaders) == "" {
				t.Errorf("48 KiB of headers: status %d, %s %q; want 500 and a note of what was dropped",
					att.Status, deliver.DroppedHeaders, att.ResponseHeaders.Get(deliver.DroppedHeaders))
			}
		case 1 << 20:
			if att.Status != 0 || !strings.Contains(att.Error, "headers exceeded") {
				t.Errorf("1 MiB of headers: status %d, error %q; want the attempt refused", att.Status, att.Error)
			}
		}
		if err := e.q.Close(); err != nil {
			t.Fatal(err)
		}
		grow[size] = float64(storedBytes(t, e.opts.Dir)) / deliveries
		st, _ := os.Stat(filepath.Join(e.opts.Dir, "walhook.db"))
		t.Logf("receiver sending %7d bytes of headers: %6.0f bytes stored per attempt (file %d bytes after %d attempts)",
			size, grow[size], st.Size(), deliveries)
	}
	for _, size := range []int{48 << 10, 1 << 20} {
		if extra := grow[size] - grow[0]; extra > 8<<10 {
			t.Errorf("%d bytes of headers: %.0f bytes more per attempt than a plain 500, want at most 8 KiB", size, extra)
		}
	}
}
