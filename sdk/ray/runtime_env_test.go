package ray_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

var (
	getenv   = ray.Func1("test.Getenv", func(_ context.Context, k string) (string, error) { return os.Getenv(k), nil })
	readFile = ray.Func1("test.ReadFile", func(_ context.Context, name string) (string, error) {
		b, err := os.ReadFile(name) // relative: the worker's current directory
		return string(b), err
	})
)

// TestTaskRuntimeEnv: a task's runtime env applies to that task only; a
// working dir is shipped and is the worker's current directory; one that
// cannot be set up fails the task with ErrRuntimeEnvSetup.
func TestTaskRuntimeEnv(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ray.Init(ctx, ray.NodeResources(map[string]float64{"CPU": 2})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ray.Shutdown(context.Background()) })

	env := ray.WithRuntimeEnv(ray.RuntimeEnv{EnvVars: map[string]string{"MANTA_TEST_VAR": "task"}})
	with, err := ray.Get(ctx, getenv.Remote(ctx, ray.Val("MANTA_TEST_VAR"), env))
	if err != nil || with != "task" {
		t.Fatalf("with the env: %q, %v; want \"task\"", with, err)
	}
	without, err := ray.Get(ctx, getenv.Remote(ctx, ray.Val("MANTA_TEST_VAR")))
	if err != nil || without != "" {
		t.Fatalf("without the env: %q, %v; want \"\" (the env is the task's only)", without, err)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("shipped"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ray.Get(ctx, readFile.Remote(ctx, ray.Val("data.txt"), ray.WithRuntimeEnv(ray.RuntimeEnv{WorkingDir: dir})))
	if err != nil || got != "shipped" {
		t.Fatalf("a file of the working dir: %q, %v", got, err)
	}

	_, err = ray.Get(ctx, getenv.Remote(ctx, ray.Val("X"), ray.WithRuntimeEnv(ray.RuntimeEnv{WorkingDir: "gcs://_ray_pkg_0000000000000000.zip"})))
	if !errors.Is(err, ray.ErrRuntimeEnvSetup) {
		t.Fatalf("a working dir that is not in the cluster: %v; want ErrRuntimeEnvSetup", err)
	}
	if _, err := ray.Get(ctx, getenv.Remote(ctx, ray.Val("X"), ray.WithRuntimeEnv(ray.RuntimeEnv{EnvVars: map[string]string{"": "x"}}))); !errors.Is(err, ray.ErrInvalidOption) {
		t.Fatalf("an empty variable name: %v; want ErrInvalidOption", err)
	}
}
