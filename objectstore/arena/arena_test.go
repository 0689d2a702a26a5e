package arena

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestArenaCreateReadClose(t *testing.T) {
	path := filepath.Join(DefaultDir(), "manta-arena-test-"+filepath.Base(t.TempDir()))
	m, err := Create(path, 100_000) // rounded up to pages
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if m.Size()%int64(os.Getpagesize()) != 0 || m.Size() < 100_000 {
		t.Fatalf("size %d", m.Size())
	}
	if _, err := Create(path, 4096); err == nil {
		t.Fatal("second Create of the same path succeeded")
	}
	copy(m.Bytes()[4096:], "hello arena")
	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.View(4096, 11)
	if err != nil || !bytes.Equal(v, []byte("hello arena")) {
		t.Fatalf("view %q %v", v, err)
	}
	for _, c := range [][2]int64{{-1, 1}, {0, m.Size() + 1}, {m.Size(), 1}, {1, -1}} {
		if _, err := r.View(c[0], c[1]); err == nil {
			t.Fatalf("view %v outside the arena succeeded", c)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal("second reader Close:", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("arena file left behind: %v", err)
	}
}

func TestArenaInTempDirWhenNoShm(t *testing.T) {
	// The fallback directory is a plain filesystem; the arena must work there too.
	m, err := Create(filepath.Join(t.TempDir(), "arena"), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Bytes()[0] = 7
	if m.Bytes()[0] != 7 {
		t.Fatal("write lost")
	}
}

func TestRemoveStaleArenas(t *testing.T) {
	dir := t.TempDir()
	// A PID that is certainly dead: a child we started and reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	stale := filepath.Join(dir, fmt.Sprintf("%s%d-1", prefix, dead))
	live := filepath.Join(dir, fmt.Sprintf("%s%d-2", prefix, os.Getpid()))
	other := filepath.Join(dir, "unrelated-file")
	for _, p := range []string{stale, live, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveStale(dir)
	if err != nil || len(removed) != 1 || removed[0] != stale {
		t.Fatalf("removed %v, %v", removed, err)
	}
	for _, p := range []string{live, other} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s removed: %v", p, err)
		}
	}
}

// TestArenaCommitsLazily: a fresh arena holds no memory; Commit backs it in
// CommitStep steps as higher offsets are used, and only that much of the
// file is allocated in tmpfs.
func TestArenaCommitsLazily(t *testing.T) {
	path := filepath.Join(DefaultDir(), "manta-arena-test-"+filepath.Base(t.TempDir()))
	m, err := Create(path, 8*CommitStep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	allocated := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	if m.Committed() != 0 || allocated() != 0 {
		t.Fatalf("fresh arena: committed %d, file holds %d bytes", m.Committed(), allocated())
	}
	if err := m.Commit(100); err != nil || m.Committed() != CommitStep {
		t.Fatalf("commit 100: %d %v", m.Committed(), err)
	}
	if err := m.Commit(CommitStep); err != nil || m.Committed() != CommitStep {
		t.Fatalf("commit within the mark: %d %v", m.Committed(), err)
	}
	if err := m.Commit(2*CommitStep + 1); err != nil || m.Committed() != 3*CommitStep {
		t.Fatalf("commit past the mark: %d %v", m.Committed(), err)
	}
	if got := allocated(); got != 3*CommitStep {
		t.Fatalf("file holds %d bytes; want the %d committed", got, 3*CommitStep)
	}
	if err := m.Commit(m.Size() + 1); err == nil {
		t.Fatal("commit beyond the arena succeeded")
	}
	// The committed range is usable memory, seen by a reader of the file.
	copy(m.Bytes()[2*CommitStep:], "lazy")
	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v, err := r.View(2*CommitStep, 4); err != nil || string(v) != "lazy" || r.Size() != m.Size() {
		t.Fatalf("reader sees %q (%v), size %d of %d", v, err, r.Size(), m.Size())
	}
}
