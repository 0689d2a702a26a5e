package logmonitor

import (
	"bytes"
	"errors"
	"io"
	"os"

	"github.com/manta-ray/manta/raylet/workerlog"
)

// MaxLine bounds a line: a longer one is cut into pieces of this size.
const MaxLine = 64 << 10

// Line is one line of a worker's output with what the worker ran when it
// printed it.
type Line struct {
	File
	workerlog.Attribution
	Text []byte // without its newline
}

// follower reads one worker's log from the oldest byte kept and follows it
// across rotations. It only reads files: the worker's writes never wait for
// it.
type follower struct {
	file File
	// backups are the rotated files still to read, oldest first, opened
	// together with cur so that a rotation meanwhile cannot lose them.
	backups []*os.File
	cur     *os.File // nil while the path is being rotated
	curInfo os.FileInfo
	partial []byte
	attr    workerlog.Attribution
	buf     []byte
	// onMarker sees every marker after it is applied.
	onMarker func(*follower)
}

func openFollower(f File, onMarker func(*follower)) (*follower, error) {
	fl := &follower{file: f, buf: make([]byte, 64<<10), onMarker: onMarker}
	for i := 1; ; i++ {
		b, err := os.Open(BackupPath(f.Path, i))
		if err != nil {
			break
		}
		fl.backups = append([]*os.File{b}, fl.backups...)
	}
	if err := fl.openCur(); err != nil && len(fl.backups) == 0 {
		return nil, err
	}
	return fl, nil
}

func (fl *follower) openCur() error {
	f, err := os.Open(fl.file.Path)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	fl.cur, fl.curInfo = f, st
	return nil
}

// poll reads up to about budget new bytes, handing each complete line to
// emit (markers are applied, not emitted). It returns the bytes read; 0
// means the follower is at the end of the file.
func (fl *follower) poll(budget int, emit func(Line)) (int, error) {
	n := 0
	for n < budget {
		if len(fl.backups) > 0 {
			k, eof, err := fl.readOnce(fl.backups[0], emit)
			n += k
			if err != nil {
				return n, err
			}
			if eof {
				fl.backups[0].Close()
				fl.backups = fl.backups[1:]
			}
			continue
		}
		if fl.cur == nil {
			if err := fl.openCur(); err != nil {
				return n, nil // not re-created yet: the next poll retries
			}
		}
		k, eof, err := fl.readOnce(fl.cur, emit)
		n += k
		if err != nil {
			return n, err
		}
		if !eof {
			continue
		}
		// At the end: if the path now names another file, the writer closed
		// ours before renaming it, so what is left in it is all there is.
		st, err := os.Stat(fl.file.Path)
		if err == nil && os.SameFile(st, fl.curInfo) {
			break
		}
		for {
			k, eof, err := fl.readOnce(fl.cur, emit)
			n += k
			if err != nil {
				return n, err
			}
			if eof {
				break
			}
		}
		fl.cur.Close()
		fl.cur = nil
		fl.openNewer()
	}
	return n, nil
}

// openNewer opens the rotated files newer than the one just read out (the
// writer may have rotated more than once since the last poll), oldest
// first. If ours is gone too, the reader fell behind the bound and what
// was in between is lost; every backup left is newer.
func (fl *follower) openNewer() {
	var newer []*os.File
	for j := 1; ; j++ {
		p := BackupPath(fl.file.Path, j)
		st, err := os.Stat(p)
		if err != nil || os.SameFile(st, fl.curInfo) {
			break
		}
		f, err := os.Open(p)
		if err != nil {
			break
		}
		newer = append([]*os.File{f}, newer...)
	}
	fl.backups = newer
}

// readOnce reads one buffer from f.
func (fl *follower) readOnce(f *os.File, emit func(Line)) (int, bool, error) {
	k, err := f.Read(fl.buf)
	if k > 0 {
		fl.consume(fl.buf[:k], emit)
	}
	if errors.Is(err, io.EOF) || (err == nil && k == 0) {
		return k, true, nil
	}
	return k, false, err
}

func (fl *follower) consume(b []byte, emit func(Line)) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			fl.partial = append(fl.partial, b...)
			for len(fl.partial) >= MaxLine {
				fl.line(fl.partial[:MaxLine], emit)
				fl.partial = append(fl.partial[:0], fl.partial[MaxLine:]...)
			}
			return
		}
		if len(fl.partial) > 0 {
			fl.partial = append(fl.partial, b[:i]...)
			fl.line(fl.partial, emit)
			fl.partial = fl.partial[:0]
		} else {
			fl.line(b[:i], emit)
		}
		b = b[i+1:]
	}
}

func (fl *follower) line(text []byte, emit func(Line)) {
	if m, ok := workerlog.Parse(text); ok {
		fl.attr.Apply(m)
		if fl.onMarker != nil {
			fl.onMarker(fl)
		}
		return
	}
	emit(Line{File: fl.file, Attribution: fl.attr, Text: bytes.Clone(text)})
}

// flush emits a last line the worker did not end with a newline.
func (fl *follower) flush(emit func(Line)) {
	if len(fl.partial) > 0 {
		fl.line(fl.partial, emit)
		fl.partial = fl.partial[:0]
	}
}

func (fl *follower) close() {
	for _, b := range fl.backups {
		b.Close()
	}
	fl.backups = nil
	if fl.cur != nil {
		fl.cur.Close()
		fl.cur = nil
	}
}
