package deliver

import (
	"log/slog"
	"sync"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

const (
	logFlushEvery = 100 * time.Millisecond // buffered .log lines reach the file within this
	logBufferMax  = 64 << 10               // or as soon as this many bytes wait
)

// logFile is a webhook's rotating .log. Lines are buffered and written
// in one write per burst: a write per attempt was a twentieth of walhook's
// CPU at full speed. A crash loses at most the last logFlushEvery of
// lines; the store keeps every attempt regardless.
type logFile struct {
	name string
	log  *slog.Logger

	mu        sync.Mutex
	out       *lumberjack.Logger
	buf       []byte
	scheduled bool // a flush will run
	closed    bool
}

func newLogFile(name string, out *lumberjack.Logger, log *slog.Logger) *logFile {
	return &logFile{name: name, out: out, log: log}
}

// writeLine adds one line, newline included.
func (l *logFile) writeLine(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.buf = append(l.buf, line...)
	if len(l.buf) >= logBufferMax {
		l.flushLocked()
		return
	}
	if !l.scheduled {
		l.scheduled = true
		time.AfterFunc(logFlushEvery, l.scheduledFlush)
	}
}

func (l *logFile) scheduledFlush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.scheduled = false
	l.flushLocked()
}

// flush writes the buffered lines now.
func (l *logFile) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

func (l *logFile) flushLocked() {
	if len(l.buf) == 0 || l.closed {
		return
	}
	if _, err := l.out.Write(l.buf); err != nil {
		l.log.Error("write webhook log", "webhook", l.name, "err", err)
	}
	l.buf = l.buf[:0]
	if cap(l.buf) > 2*logBufferMax {
		l.buf = nil // a burst of long lines: do not keep its buffer
	}
}

// close writes what is buffered and closes the file; later lines are
// dropped.
func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	l.closed = true
	l.out.Close()
}
