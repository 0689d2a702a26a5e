package logmonitor

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/manta-ray/manta/raylet/workerlog"
)

// BenchmarkRotatingFileWrite: 100-byte lines into a rotating file (1 MiB
// files, 2 backups).
func BenchmarkRotatingFileWrite(b *testing.B) {
	r, err := OpenRotating(filepath.Join(b.TempDir(), FileName("w", "j", 1)), 1<<20, 2)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := r.Write(line); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamRead: reading a worker's 16 MiB of kept output (100-byte
// lines, a task marker every 1,000) into attributed lines.
func BenchmarkStreamRead(b *testing.B) {
	dir := b.TempDir()
	r, err := OpenRotating(filepath.Join(dir, FileName("w", "j", 1)), 4<<20, 3)
	if err != nil {
		b.Fatal(err)
	}
	line := strings.Repeat("x", 99) + "\n"
	var total int64
	for i := 0; total < 16<<20-(1<<16); i++ {
		if i%1000 == 0 {
			_ = workerlog.WriteTaskMarker(r, fmt.Sprint("t", i), 0, "f", "")
		}
		n, _ := r.Write([]byte(line))
		total += int64(n)
	}
	r.Close()
	m := &Monitor{Dir: dir}
	b.SetBytes(total)
	for b.Loop() {
		lines := 0
		if err := m.Stream(context.Background(), Query{Tail: -1}, func(ls []Line) error { lines += len(ls); return nil }); err != nil {
			b.Fatal(err)
		}
		if lines == 0 {
			b.Fatal("no lines")
		}
	}
}
