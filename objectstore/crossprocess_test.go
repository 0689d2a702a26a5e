package objectstore

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/objectstore/arena"
)

// The test binary doubles as the "worker" that maps the arena: with
// childEnv set, TestMain runs readerChild instead of the tests.
const childEnv = "MANTA_OBJECTSTORE_READER_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := readerChild(); err != nil {
			fmt.Fprintln(os.Stderr, "reader child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// readerChild maps the arena read-only, as a worker would, and reads one
// object by (offset, size): "sum" prints its SHA-256; "copy" copies it out
// reps times through a fresh mapping each time and prints the seconds.
func readerChild() error {
	var path, mode string
	var off, size, reps int64
	if _, err := fmt.Sscan(os.Getenv(childEnv), &path, &mode, &off, &size, &reps); err != nil {
		return err
	}
	var dst []byte
	if mode == "copy" {
		dst = make([]byte, size)
		for i := 0; i < len(dst); i += os.Getpagesize() {
			dst[i] = 1 // fault the destination in before timing, as the baseline does
		}
	}
	if mode == "warm" { // one mapping for all reads, as a long-lived worker keeps it
		r, err := arena.OpenReader(path)
		if err != nil {
			return err
		}
		defer r.Close()
		start := time.Now()
		for range reps {
			v, err := r.View(off, size)
			if err != nil {
				return err
			}
			copy(dst, v)
		}
		fmt.Println(time.Since(start).Seconds())
		return nil
	}
	start := time.Now()
	for range reps {
		r, err := arena.OpenReader(path)
		if err != nil {
			return err
		}
		v, err := r.View(off, size)
		if err != nil {
			return err
		}
		if mode == "sum" {
			fmt.Println(sum(v))
		} else {
			copy(dst, v)
		}
		if err := r.Close(); err != nil {
			return err
		}
	}
	if mode == "copy" {
		fmt.Println(time.Since(start).Seconds())
	}
	return nil
}

// runReader starts the child and returns its output; the child is killed by
// PID in Cleanup if the test ends first.
func runReader(t testing.TB, path, mode string, off, size, reps int64) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d %d", childEnv, path, mode, off, size, reps))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill() // already reaped by Wait in the normal case: harmless
		}
	})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("reader child %d: %v: %s", pid, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// fillQuick fills b with distinct random megabytes fast (one getrandom of
// 1 MiB, then copies with a per-megabyte stamp), so a 256 MiB object does
// not dominate the race-enabled run.
func fillQuick(t testing.TB, b []byte) {
	const mib = 1 << 20
	block := make([]byte, mib)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += mib {
		n := copy(b[i:], block)
		copy(b[i:i+min(n, 8)], strconv.Itoa(i/mib))
	}
}

// TestCrossProcessRead256MiB: a child process maps the arena and checksums
// a 256 MiB object the parent wrote, reading it in place (no copy through
// any socket); the checksums must match.
func TestCrossProcessRead256MiB(t *testing.T) {
	const size = 256 << 20
	s := newShared(t, size+(1<<20), noSpill)
	id := oid(1)
	buf, err := s.Create(id, size, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fillQuick(t, buf)
	if err := s.Seal(id); err != nil {
		t.Fatal(err)
	}
	v, err := s.Acquire(id) // the raylet pins on the worker's behalf
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	want := sum(v.Data)
	l := s.Locate(id)
	if l.Tier != InMemory || l.Offset != v.Offset {
		t.Fatalf("locate %+v", l)
	}
	if got := runReader(t, l.Arena, "sum", l.Offset, l.Size, 1); got != want {
		t.Fatalf("child read checksum %s, parent wrote %s", got, want)
	}
}
