package deliver

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

func TestLogFileBuffers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.log")
	l := newLogFile("h", &lumberjack.Logger{Filename: path, MaxSize: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	read := func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
	l.writeLine([]byte("one\n"))
	l.writeLine([]byte("two\n"))
	l.flush()
	if got := read(); got != "one\ntwo\n" {
		t.Fatalf("after flush the file has %q", got)
	}

	// Without a flush the lines still arrive, on the timer.
	l.writeLine([]byte("three\n"))
	if !eventually(10*time.Second, func() bool { return strings.HasSuffix(read(), "three\n") }) {
		t.Fatalf("the buffered line never reached the file: %q", read())
	}

	// A full buffer is written at once.
	long := bytes.Repeat([]byte("x"), logBufferMax)
	l.writeLine(append(long, '\n'))
	if got := read(); !strings.HasSuffix(got, string(long)+"\n") {
		t.Fatalf("a %d-byte burst waited for the timer", len(long)+1)
	}

	// close writes what waits; nothing after it reopens the file.
	l.writeLine([]byte("last\n"))
	l.close()
	if !strings.HasSuffix(read(), "last\n") {
		t.Fatal("close lost the buffered line")
	}
	l.writeLine([]byte("after close\n"))
	l.flush()
	l.mu.Lock()
	waiting := len(l.buf)
	l.mu.Unlock()
	if waiting != 0 || strings.Contains(read(), "after close") {
		t.Fatalf("after close a line waits (%d bytes) or reached the file", waiting)
	}
}
