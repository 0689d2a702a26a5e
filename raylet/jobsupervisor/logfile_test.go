package jobsupervisor

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestLogFileRotates: the log keeps at most its bound on disk; a reader
// behind what rotation dropped resumes at the oldest byte kept and learns
// how much it missed.
func TestLogFileRotates(t *testing.T) {
	l, err := openLogFile(filepath.Join(t.TempDir(), "driver.log"), 20)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for _, s := range []string{"0123456789", "abcdefghij", "ABCDEFGHIJ", "klmnopqrst"} {
		l.Write([]byte(s))
		all.WriteString(s)
	}
	l.finish()
	buf := make([]byte, 100)
	n, start, _, _, err := l.readAt(0, buf)
	if err != nil || start != 20 || string(buf[:n]) != "ABCDEFGHIJ" {
		t.Fatalf("read from 0: %q at %d, %v; want the oldest kept part at 20", buf[:n], start, err)
	}
	n, start, _, _, _ = l.readAt(30, buf)
	if start != 30 || string(buf[:n]) != "klmnopqrst" {
		t.Fatalf("read from 30: %q at %d", buf[:n], start)
	}
	n, start, done, _, _ := l.readAt(40, buf)
	if n != 0 || start != 40 || !done || l.end() != int64(all.Len()) {
		t.Fatalf("at the end: n=%d start=%d done=%v", n, start, done)
	}
}
