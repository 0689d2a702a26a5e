package pkgstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestUnpackRefusesSymlinkParent is the regression test for an escape the
// lexical symlink check missed: "s" → "." makes "s/t" live at the root, so
// "s/t" → "../x" (lexically "x", inside) pointed out of the directory, and
// a file written under "t/" landed outside it.
func TestUnpackRefusesSymlinkParent(t *testing.T) {
	for name, entries := range map[string][][2]string{
		"link in a linked dir":      {{"s@", "."}, {"s/t@", "../x"}, {"t/evil", "x"}},
		"file through a linked dir": {{"s@", "sub"}, {"sub/", ""}, {"s/evil", "x"}},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			os.Mkdir(filepath.Join(root, "x"), 0o755) // somewhere to land outside
			dest := filepath.Join(root, "out")
			err := Unpack(zipOf(t, entries), dest)
			if !errors.Is(err, ErrUnsafe) {
				t.Errorf("unpack: %v; want ErrUnsafe", err)
			}
			if _, err := os.Stat(filepath.Join(root, "x", "evil")); err == nil {
				t.Fatal("a file landed outside the directory")
			}
		})
	}
}
