package currentcluster

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestLookup(t *testing.T) {
	t.Setenv(EnvFile, filepath.Join(t.TempDir(), "current.json"))
	ctx := context.Background()
	if _, err := Lookup(ctx, time.Second); !errors.Is(err, ErrNone) {
		t.Fatalf("Lookup with no file: %v; want ErrNone", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	live := Info{Heads: []string{lis.Addr().String()}, TokenFile: "/x/token", PID: os.Getpid()}
	if err := Write(live); err != nil {
		t.Fatal(err)
	}
	got, err := Lookup(ctx, time.Second)
	if err != nil || got.Heads[0] != live.Heads[0] || got.TokenFile != live.TokenFile {
		t.Fatalf("Lookup = %+v, %v; want %+v", got, err, live)
	}

	// A writer that is gone.
	p := exec.Command("true")
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	dead := live
	dead.PID = p.Process.Pid
	if err := Write(dead); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(ctx, time.Second); !errors.Is(err, ErrStale) {
		t.Fatalf("Lookup of a dead writer's file: %v; want ErrStale", err)
	}

	// Heads that do not answer.
	addr := lis.Addr().String()
	lis.Close()
	gone := Info{Heads: []string{addr}, PID: os.Getpid()}
	if err := Write(gone); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(ctx, time.Second); !errors.Is(err, ErrStale) {
		t.Fatalf("Lookup of a file whose heads are gone: %v; want ErrStale", err)
	}

	// Remove leaves another writer's file alone.
	Remove(os.Getpid() + 1)
	if _, err := os.Stat(Path()); err != nil {
		t.Fatalf("Remove by another PID removed the file: %v", err)
	}
	Remove(os.Getpid())
	if _, err := os.Stat(Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Remove by its writer left the file: %v", err)
	}

	t.Setenv(EnvFile, "off")
	if err := Write(live); err != nil || Path() != "" {
		t.Fatalf("disabled: Write = %v, Path = %q", err, Path())
	}
	if _, err := Lookup(ctx, time.Second); !errors.Is(err, ErrNone) {
		t.Fatalf("disabled Lookup: %v; want ErrNone", err)
	}
}
