package jobsupervisor

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// logFile keeps a driver's output on disk, bounded: the current file grows
// to half the bound, then becomes the previous one (the older one is
// dropped) and a new file starts. Readers address output by its offset in
// the whole stream; what rotation dropped is reported as skipped.
type logFile struct {
	path    string
	maxPart int64

	mu       sync.Mutex
	f        *os.File
	base     int64 // stream offset of the current file's first byte
	size     int64 // bytes in the current file
	prevBase int64 // stream offset of the previous file's first byte (-1: none)
	closed   bool  // the writer ended: no more output
	changed  chan struct{}
}

func openLogFile(path string, maxBytes int64) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	os.Remove(path + ".1")
	return &logFile{path: path, maxPart: max(maxBytes/2, 1), f: f, prevBase: -1, changed: make(chan struct{})}, nil
}

// Write appends p, rotating first when the current file is full.
func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.maxPart {
		if err := l.rotateLocked(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	close(l.changed)
	l.changed = make(chan struct{})
	return n, err
}

func (l *logFile) rotateLocked() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		l.f = nil
		return err
	}
	l.f, l.prevBase, l.base, l.size = f, l.base, l.base+l.size, 0
	return nil
}

// finish marks the end of the output: followers return once they read it.
func (l *logFile) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
}

// end is the stream offset past the last byte written.
func (l *logFile) end() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base + l.size
}

// readAt reads up to len(buf) bytes at stream offset off. It returns the
// bytes, the offset they start at (later than off when rotation dropped
// what off named), whether the writer has ended, and a channel closed at
// the next write.
func (l *logFile) readAt(off int64, buf []byte) (n int, start int64, done bool, changed <-chan struct{}, err error) {
	l.mu.Lock()
	base, size, prevBase, closed, ch := l.base, l.size, l.prevBase, l.closed, l.changed
	l.mu.Unlock()
	end := base + size
	if off > end {
		off = end
	}
	path, fileBase := l.path, base
	switch {
	case off >= base:
	case prevBase >= 0 && off >= prevBase:
		path, fileBase = l.path+".1", prevBase
	case prevBase >= 0: // dropped by rotation: resume at the oldest byte kept
		off, path, fileBase = prevBase, l.path+".1", prevBase
	default:
		off = base
	}
	if off == end {
		return 0, off, closed, ch, nil
	}
	f, err := os.Open(path)
	if err != nil {
		// Rotated between the snapshot and the open: the caller retries.
		return 0, off, false, closedChan, nil
	}
	defer f.Close()
	n, err = f.ReadAt(buf, off-fileBase)
	if err == io.EOF {
		err = nil
	}
	if err != nil {
		return 0, off, false, ch, fmt.Errorf("read job log: %w", err)
	}
	return n, off, false, ch, nil
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
