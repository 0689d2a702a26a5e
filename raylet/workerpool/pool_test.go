package workerpool

import (
	"context"
	"os"
	"path/filepath"
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
