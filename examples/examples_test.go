// Package examples_test builds every example and runs it: each starts an
// embedded cluster, checks its own output and exits non-zero when wrong.
package examples_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs programs")
	}
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "./add", "./chain", "./wait", "./split", "./nested", "./cancel", "./actorcancel", "./jobapp", "./observe", "./generator", "./refs", "./wordcount", "./inference", "./datasort", "./serve").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, name := range []string{"add", "chain", "wait", "split", "nested", "cancel", "actorcancel", "jobapp", "observe", "generator", "refs", "wordcount", "inference", "datasort", "serve"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(dir, name))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, out)
			}
			t.Logf("%s", out)
		})
	}
}
