package workerpool

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// fakeWorker is a "binary" that runs until killed; the test plays its
// handshake through Register.
func fakeWorker(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "worker.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexec sleep 120\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// popRegistered pops a worker, playing the new process's handshake.
func popRegistered(t *testing.T, p *Pool, job, bin string) *Worker {
	t.Helper()
	got := make(chan *Worker, 1)
	go func() {
		w, err := p.Pop(context.Background(), job, bin, "")
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case w := <-got:
			return w
		default:
		}
		for _, w := range p.Workers() {
			_ = p.Register(w.ID, "127.0.0.1:1", w.PID) // idempotent for registered ones
		}
		if time.Now().After(deadline) {
			t.Fatal("Pop did not return")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolReusesKillsAndRetires(t *testing.T) {
	bin := fakeWorker(t)
	exited := make(chan string, 10)
	p := New(Config{LogDir: t.TempDir(), IdleTimeout: 200 * time.Millisecond, OnExit: func(w *Worker) { exited <- w.ID }})
	t.Cleanup(p.Close)

	w1 := popRegistered(t, p, "job-1", bin)
	if w1.Address != "127.0.0.1:1" || w1.PID == 0 {
		t.Fatalf("worker %+v", w1)
	}
	if err := p.Register(w1.ID, "x", w1.PID+1); err == nil {
		t.Fatal("a handshake with the wrong PID was accepted")
	}
	p.Push(w1)
	if w := popRegistered(t, p, "job-1", bin); w != w1 {
		t.Fatal("an idle worker of the job was not reused")
	}
	w2 := popRegistered(t, p, "job-2", bin)
	if w2 == w1 {
		t.Fatal("a worker crossed jobs")
	}
	if n := p.KillJob("job-1"); n != 1 {
		t.Fatalf("KillJob killed %d", n)
	}
	<-w1.Exited()
	if id := <-exited; id != w1.ID {
		t.Fatalf("OnExit for %s; want %s", id, w1.ID)
	}
	p.Push(w2)
	eventually(t, "the idle worker to retire", func() bool { return p.Len() == 0 })
}

func TestPoolCloseKillsEverything(t *testing.T) {
	bin := fakeWorker(t)
	p := New(Config{LogDir: t.TempDir()})
	w := popRegistered(t, p, "job", bin)
	p.Close()
	select {
	case <-w.Exited():
	default:
		t.Fatal("Close returned before its workers were reaped")
	}
	p.Close() // idempotent
	if _, err := p.Pop(context.Background(), "job", bin, ""); err != ErrClosed {
		t.Fatalf("Pop after Close: %v", err)
	}
}

// registerAll plays the handshake of every started worker.
func registerAll(p *Pool) {
	for _, w := range p.Workers() {
		_ = p.Register(w.ID, "127.0.0.1:1", w.PID)
	}
}

func TestPoolPrestartRefillsBoundsAndEndsWithJob(t *testing.T) {
	bin := fakeWorker(t)
	p := New(Config{LogDir: t.TempDir(), Prestart: 2, IdleTimeout: time.Hour})
	t.Cleanup(p.Close)

	// Prestart starts the missing warm workers at once, up to the bound.
	p.Prestart("job-1", bin, "")
	if n := p.Len(); n != 2 {
		t.Fatalf("after Prestart: %d workers, want 2", n)
	}
	p.Prestart("job-1", bin, "")
	p.Prestart("job-1", bin, "")
	if n, w := p.Len(), p.Warm("job-1"); n != 2 || w != 2 {
		t.Fatalf("after more Prestarts: %d workers, %d warm; want 2, 2", n, w)
	}
	warm := map[string]bool{}
	for _, w := range p.Workers() {
		warm[w.ID] = true
	}

	// A Pop while they are still starting claims one instead of starting
	// another process.
	got := make(chan *Worker, 1)
	go func() {
		w, err := p.Pop(context.Background(), "job-1", bin, "")
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	var w1 *Worker
	deadline := time.Now().Add(20 * time.Second)
	for w1 == nil {
		registerAll(p)
		select {
		case w1 = <-got:
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Pop did not return")
		}
	}
	if !warm[w1.ID] {
		t.Fatalf("Pop started worker %s instead of claiming a warm one", w1.ID)
	}
	if n := p.Len(); n != 2 {
		t.Fatalf("after Pop: %d workers, want the 2 prestarted ones", n)
	}
	// The other one becomes idle on its handshake, and a Pop takes it.
	eventually(t, "the warm worker to go idle", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.idle["job-1"]) == 1 && len(p.warming["job-1"]) == 0
	})
	w2 := popRegistered(t, p, "job-1", bin)
	if !warm[w2.ID] || w2 == w1 {
		t.Fatalf("Pop returned %s, not the idle prestarted worker", w2.ID)
	}

	// Refill: the leased two do not count against the bound.
	p.Prestart("job-1", bin, "")
	if n, w := p.Len(), p.Warm("job-1"); n != 4 || w != 2 {
		t.Fatalf("after the refill: %d workers, %d warm; want 4, 2", n, w)
	}
	// Bounds are per job.
	p.Prestart("job-2", bin, "")
	if n, w := p.Len(), p.Warm("job-2"); n != 6 || w != 2 {
		t.Fatalf("after job-2's Prestart: %d workers, %d warm; want 6, 2", n, w)
	}

	// The job ends: all its workers die, warm and leased, and it is never
	// prestarted for again; job-2's stay.
	if n := p.KillJob("job-1"); n != 4 {
		t.Fatalf("KillJob killed %d, want 4", n)
	}
	for _, w := range []*Worker{w1, w2} {
		<-w.Exited()
	}
	eventually(t, "job-1's workers to be reaped", func() bool { return p.Len() == 2 })
	if n := p.Warm("job-1"); n != 0 {
		t.Fatalf("job-1 has %d warm workers after its end", n)
	}
	p.Prestart("job-1", bin, "")
	if n := p.Len(); n != 2 {
		t.Fatalf("Prestart of an ended job started workers: %d live", n)
	}
	for _, w := range p.Workers() {
		if w.JobID != "job-2" {
			t.Fatalf("worker %s of %s outlived its job", w.ID, w.JobID)
		}
	}
}

func TestPoolPrestartedWorkersRetireWhenIdle(t *testing.T) {
	bin := fakeWorker(t)
	p := New(Config{LogDir: t.TempDir(), Prestart: 3, IdleTimeout: 100 * time.Millisecond})
	t.Cleanup(p.Close)
	p.Prestart("job", bin, "")
	if n := p.Len(); n != 3 {
		t.Fatalf("after Prestart: %d workers, want 3", n)
	}
	registerAll(p)
	eventually(t, "the idle prestarted workers to retire", func() bool { return p.Len() == 0 })
}

func TestPoolPrestartDisabledByDefault(t *testing.T) {
	bin := fakeWorker(t)
	p := New(Config{LogDir: t.TempDir()})
	t.Cleanup(p.Close)
	p.Prestart("job", bin, "")
	if n := p.Len(); n != 0 {
		t.Fatalf("Prestart with Config.Prestart 0 started %d workers", n)
	}
}

// TestPoolKeepsIdleWorkersItIsTold: an idle worker KeepIdle vouches for
// (it owns borrowed objects) is not retired; once it no longer does, it is.
func TestPoolKeepsIdleWorkersItIsTold(t *testing.T) {
	bin := fakeWorker(t)
	var keep atomic.Bool
	keep.Store(true)
	asked := make(chan struct{}, 100)
	p := New(Config{LogDir: t.TempDir(), IdleTimeout: 50 * time.Millisecond, KeepIdle: func(*Worker) bool {
		select {
		case asked <- struct{}{}:
		default:
		}
		return keep.Load()
	}})
	t.Cleanup(p.Close)
	w := popRegistered(t, p, "job", bin)
	p.Push(w)
	for range 3 { // asked three times: kept through three timeouts
		<-asked
	}
	if p.Len() != 1 {
		t.Fatalf("pool has %d workers after KeepIdle kept its one", p.Len())
	}
	keep.Store(false)
	eventually(t, "the worker to retire once KeepIdle lets it go", func() bool { return p.Len() == 0 })
}
