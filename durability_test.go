package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"walhook/internal/testkit"
)

// needRoot lets a test that mounts file systems run only as root. As root
// (CI) it does nothing: the test runs, and a mount that fails fails it. As
// another user the test fails, not skips, because `go test ./...` prints
// nothing of a skip and a promise would go untested unseen; setting
// $WALHOOK_TEST_NO_ROOT=1 makes it skip instead, said on stderr, which
// `go test` run in the package's directory and -v show.
func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	why := fmt.Sprintf("%s needs root: it %s", t.Name(), what)
	if os.Getenv("WALHOOK_TEST_NO_ROOT") == "" {
		t.Fatalf("%s; run the tests as root, as CI does, or set WALHOOK_TEST_NO_ROOT=1 to skip the tests that need root", why)
	}
	fmt.Fprintf(os.Stderr, "SKIP %s (WALHOOK_TEST_NO_ROOT is set)\n", why)
	t.Skip(why)
}

// mount runs mount(8) with args and fails the test if it fails.
func mount(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v %s", args, err, out)
	}
}

// ext4Store makes dir the mount point of an ext4 file system of its own,
// in a 64 MiB image (loop-mounted), and returns the image. The test's end
// unmounts it.
func ext4Store(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "store.ext4")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(64 << 20)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		mkfs = "/sbin/mkfs.ext4" // root's PATH may lack sbin
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 (Debian's e2fsprogs): %v %s", err, out)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	mount(t, "-o", "loop", img, dir)
	t.Cleanup(func() {
		if mounted(dir) {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", dir, err, out)
			}
		}
	})
	return img
}

// mounted reports whether dir is a mount point.
func mounted(dir string) bool {
	var d, parent syscall.Stat_t
	return syscall.Stat(dir, &d) == nil && syscall.Stat(filepath.Dir(dir), &parent) == nil && d.Dev != parent.Dev
}

// powerCut shuts down the ext4 file system mounted at dir the way a power
// cut leaves it: EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH (as
// xfstests' godown does) makes every later access fail and drops whatever
// was written but not yet synced, data and journal, so what the disk holds
// is what fsync put there.
func powerCut(t *testing.T, dir string) {
	t.Helper()
	const (
		ext4IocShutdown   = 0x8004587d // _IOR('X', 125, __u32)
		goingFlagsNoFlush = 2          // EXT4_GOING_FLAGS_NOLOGFLUSH
	)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	flags := uint32(goingFlagsNoFlush)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, d.Fd(), ext4IocShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		t.Fatalf("shut down the file system at %s: %v", dir, errno)
	}
}

// TestConfirmedSurvivesPowerLoss: what walhook has confirmed to PostgreSQL
// survives the loss of every write it did not fsync. The store lives on an
// ext4 file system of its own; a transaction's deliveries are held pending
// (the receiver does not answer), and once the slot's confirmed_flush_lsn
// has passed the transaction, the power is cut (powerCut), walhook killed,
// the file system mounted again and walhook restarted on it: every event
// still arrives, because PostgreSQL will not send them again. A store that
// skipped fsync before the confirmation (bbolt's NoSync) loses them.
func TestConfirmedSurvivesPowerLoss(t *testing.T) {
	needRoot(t, "mounts an ext4 image and cuts its power")
	dsn := itemsDatabase(t)
	var open atomic.Bool
	rc := newKeyRecorder(nil)
	// Not testkit's Receiver: until open it holds each attempt until
	// walhook dies, then it passes requests to the key recorder.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !open.Load() {
			// The attempt hangs until walhook is killed; the server sees the
			// connection close only once the body has been read.
			io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
			return
		}
		rc.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	admin := freeAddr(t)
	cfg := itemsConfig(t, dsn, srv.URL, admin, "retry_mode = \"test\"\nmax_attempts = 8\ntimeout_ms = 60000\n")
	dir := filepath.Dir(cfg)
	store := filepath.Join(dir, "data") // [store] dir's default
	img := ext4Store(t, store)
	p := startProcess(t, filepath.Join(dir, "walhook.log"), "run", "-config", cfg)
	waitReady(t, admin)

	const rows = 200
	execSQL(t, dsn, fmt.Sprintf(`INSERT INTO items SELECT g, g, repeat('x', 500) FROM generate_series(1, %d) g`, rows))
	var keys []string
	for i := 1; i <= rows; i++ {
		keys = append(keys, fmt.Sprintf("create:%d", i))
	}
	committed := currentLSN(t, dsn) // at or past the transaction's commit
	waitFor(t, "confirmed_flush_lsn past the transaction", time.Minute, func() bool { return confirmedFlushLSN(t, dsn) >= committed })

	powerCut(t, store)
	p.kill()
	if n := rc.count(); n != 0 {
		t.Fatalf("%d events arrived before the power cut; the test needs them pending", n)
	}
	if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v %s", store, err, out)
	}
	mount(t, "-o", "loop", img, store)
	open.Store(true)
	p.start()
	rc.awaitAll(t, keys, time.Minute)
}

// currentLSN is the server's WAL write position, as a number.
func currentLSN(t *testing.T, dsn string) uint64 {
	t.Helper()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return lsnNumber(t, s)
}
