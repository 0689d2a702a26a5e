package workerpool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/manta-ray/manta/raylet/logmonitor"
	"github.com/manta-ray/manta/raylet/workerlog"
)

// envTestWorker makes the test binary a worker that prints and exits:
// "lines" prints a marker, a stdout and a stderr line; "flood:N" prints N
// 100-byte lines.
const envTestWorker = "MANTA_WORKERPOOL_TEST_WORKER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(envTestWorker); mode != "" && os.Getenv(EnvWorkerID) != "" {
		runTestWorker(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runTestWorker(mode string) {
	if n, ok := strings.CutPrefix(mode, "flood:"); ok {
		count, _ := strconv.Atoi(n)
		line := strings.Repeat("x", 90)
		for i := range count {
			fmt.Printf("%08d %s\n", i, line)
		}
		return
	}
	_ = workerlog.WriteTaskMarker(os.Stdout, "t1", 1, "square", "")
	fmt.Println("to stdout")
	fmt.Fprintln(os.Stderr, "to stderr")
}

// startExiting starts a worker of the test binary in mode and waits for it
// to exit (it never handshakes, so Pop's own wait is not used).
func startExiting(t *testing.T, p *Pool, mode string) *Worker {
	t.Helper()
	t.Setenv(envTestWorker, mode)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = p.Pop(ctx, "job-1", exe, "") }()
	var w *Worker
	eventually(t, "the worker to start", func() bool {
		ws := p.Workers()
		if len(ws) > 0 {
			w = ws[0]
		}
		return w != nil
	})
	eventually(t, "the worker to exit", func() bool {
		select {
		case <-w.Exited():
			return true
		default:
			return false
		}
	})
	return w
}

// TestWorkerOutputGoesToItsOwnFile: a worker's stdout and stderr land, in
// order, in worker-<id>-<job>-<pid>.log, markers included (the monitor
// strips them), and the file is complete once the worker is reported
// exited.
func TestWorkerOutputGoesToItsOwnFile(t *testing.T) {
	dir := t.TempDir()
	var echo lockedBuffer
	p := New(Config{LogDir: dir, Output: &echo})
	t.Cleanup(p.Close)
	w := startExiting(t, p, "lines")
	want := filepath.Join(dir, logmonitor.FileName(w.ID, "job-1", w.PID))
	if w.LogPath != want {
		t.Fatalf("log path %q, want %q", w.LogPath, want)
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], workerlog.TaskPrefix) || lines[1] != "to stdout" || lines[2] != "to stderr" {
		t.Fatalf("log file holds %q", lines)
	}
	// Output (embedded mode's stderr) gets the same lines without markers.
	if got := echo.String(); got != "to stdout\nto stderr\n" {
		t.Fatalf("Output got %q", got)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWorkerLogRotationKeepsFilesBounded: a worker printing ten times the
// bound leaves at most (backups+1) files, none over the bound, and the
// last line it printed is in the current file.
func TestWorkerLogRotationKeepsFilesBounded(t *testing.T) {
	dir := t.TempDir()
	const maxBytes, backups, lines = 100 << 10, 2, 10 * 1024 // 100-byte lines: 1 MiB
	p := New(Config{LogDir: dir, LogMaxBytes: maxBytes, LogBackups: backups})
	t.Cleanup(p.Close)
	w := startExiting(t, p, fmt.Sprintf("flood:%d", lines))
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != backups+1 {
		t.Fatalf("%d files: %v", len(ents), ents)
	}
	for _, e := range ents {
		st, _ := e.Info()
		if st.Size() > maxBytes {
			t.Fatalf("%s holds %d bytes, bound %d", e.Name(), st.Size(), maxBytes)
		}
	}
	b, err := os.ReadFile(w.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), fmt.Sprintf("%08d %s\n", lines-1, strings.Repeat("x", 90))) {
		t.Fatalf("the current file does not end with the last line: ...%q", b[max(0, len(b)-120):])
	}
}

// BenchmarkWorkerOutput: a worker printing 100 MB (1M lines of 100 bytes)
// through the pool's pipe into its rotated file, start to exit.
func BenchmarkWorkerOutput(b *testing.B) {
	b.Setenv(envTestWorker, "flood:1000000")
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(100 * 1_000_000)
	for b.Loop() {
		p := New(Config{LogDir: b.TempDir()})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := p.Pop(ctx, "job-1", exe, ""); errc <- err }()
		var w *Worker
		for w == nil {
			if ws := p.Workers(); len(ws) > 0 {
				w = ws[0]
			}
		}
		<-w.Exited()
		cancel()
		<-errc
		p.Close()
	}
}

// TestExitedWorkersLogsAreBounded: past KeepExitedLogs exited workers, the
// oldest one's file goes; the newest stay.
func TestExitedWorkersLogsAreBounded(t *testing.T) {
	dir := t.TempDir()
	p := New(Config{LogDir: dir, KeepExitedLogs: 2})
	t.Cleanup(p.Close)
	var last []*Worker
	for range 5 {
		last = append(last, startExiting(t, p, "lines"))
	}
	files, err := logmonitor.ListFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, f := range files {
		kept[f.WorkerID] = true
	}
	if len(files) != 2 || !kept[last[3].ID] || !kept[last[4].ID] {
		t.Fatalf("kept %v, want the last two of %d workers", kept, len(last))
	}
}
