package logmonitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/raylet/workerlog"
)

func TestFileNames(t *testing.T) {
	name := FileName("ab12", "job-7", 4242)
	f, ok := ParseFileName(name)
	if !ok || f.WorkerID != "ab12" || f.JobID != "job-7" || f.PID != 4242 {
		t.Fatalf("%s parsed as %+v %v", name, f, ok)
	}
	for _, bad := range []string{"worker-ab12-job-7-4242.log.1", "worker-ab12.log", "other.log", "worker--j-1.log", "worker-a-j-x.log"} {
		if _, ok := ParseFileName(bad); ok {
			t.Fatalf("%s parsed", bad)
		}
	}
}

// TestRotationKeepsFilesBounded writes far more than the bound and checks
// that the files on disk never hold more than (backups+1)*max bytes, each
// at most max, and that the newest lines are the ones kept.
func TestRotationKeepsFilesBounded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName("w1", "j1", 1))
	const maxBytes, backups = 4096, 2
	r, err := OpenRotating(path, maxBytes, backups)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range 2000 {
		if _, err := fmt.Fprintf(r, "line %05d\n", i); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) > backups+1 {
			t.Fatalf("after line %d: %d files", i, len(ents))
		}
	}
	var total int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		if st.Size() > maxBytes {
			t.Fatalf("%s holds %d bytes", e.Name(), st.Size())
		}
		total += st.Size()
	}
	if len(ents) != backups+1 || total > (backups+1)*maxBytes {
		t.Fatalf("%d files, %d bytes", len(ents), total)
	}
	m := &Monitor{Dir: dir}
	var got []Line
	if err := m.Stream(context.Background(), Query{Tail: 3}, func(ls []Line) error { got = append(got, ls...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || string(got[2].Text) != "line 01999" || string(got[0].Text) != "line 01997" {
		t.Fatalf("tail 3: %q", texts(got))
	}
}

func texts(ls []Line) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = string(l.Text)
	}
	return out
}

// TestFollowAcrossRotationWithMarkers follows a file while it is written
// and rotated: every line arrives once, in order, markers stripped and the
// lines after them attributed; a task query finds only its lines; an
// unknown task or worker is ErrNoLogs.
func TestFollowAcrossRotationWithMarkers(t *testing.T) {
	dir := t.TempDir()
	f := File{WorkerID: "w1", JobID: "j1", PID: 7}
	r, err := OpenRotating(filepath.Join(dir, FileName(f.WorkerID, f.JobID, f.PID)), 1024, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var alive sync.Map
	alive.Store("w1", true)
	m := &Monitor{Dir: dir, Poll: 5 * time.Millisecond, Alive: func(id string) bool { _, ok := alive.Load(id); return ok }}

	const n = 600
	got := make(chan Line, 2*n)
	done := make(chan error, 1)
	go func() {
		done <- m.Stream(context.Background(), Query{WorkerID: "w1", Tail: -1, Follow: true}, func(ls []Line) error {
			for _, l := range ls {
				got <- l
			}
			return nil
		})
	}()
	for i := range n {
		if i%100 == 0 {
			if err := workerlog.WriteTaskMarker(r, fmt.Sprintf("t%d", i/100), 0, fmt.Sprintf("f%d", i/100), ""); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(r, "out %d\n", i)
	}
	fmt.Fprint(r, "no newline at the end")
	r.Close()
	alive.Delete("w1") // the stream ends once the file is read out
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream of an exited worker did not end")
	}
	close(got)
	i := 0
	for l := range got {
		if i == n {
			if string(l.Text) != "no newline at the end" {
				t.Fatalf("last line %q", l.Text)
			}
			i++
			continue
		}
		if want := fmt.Sprintf("out %d", i); string(l.Text) != want || l.TaskID != fmt.Sprintf("t%d", i/100) || l.Name != fmt.Sprintf("f%d", i/100) || l.PID != 7 {
			t.Fatalf("line %d: %q task %s %s, want %q", i, l.Text, l.TaskID, l.Name, want)
		}
		i++
	}
	if i != n+1 {
		t.Fatalf("%d lines, want %d", i, n+1)
	}

	var task []Line
	if err := m.Stream(context.Background(), Query{TaskID: "t3", Tail: -1}, func(ls []Line) error { task = append(task, ls...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(task) != 100 || string(task[0].Text) != "out 300" || string(task[99].Text) != "out 399" {
		t.Fatalf("task t3: %d lines %q...", len(task), texts(task[:min(3, len(task))]))
	}
	for _, q := range []Query{{TaskID: "nope"}, {WorkerID: "nope"}, {ActorID: "nope"}} {
		if err := m.Stream(context.Background(), q, func([]Line) error { return nil }); !errors.Is(err, ErrNoLogs) {
			t.Fatalf("%+v: %v", q, err)
		}
	}
	if err := m.Stream(context.Background(), Query{TaskID: "a", WorkerID: "b"}, func([]Line) error { return nil }); !errors.Is(err, ErrBadQuery) {
		t.Fatalf("two selectors: %v", err)
	}
}
