// Command wordcount counts words in text files with sdk/data: read the
// lines (JSON lines here, one {"line": ...} per line of text), split them
// into words (FlatMap), group by word and count, then check the counts
// against a plain Go count of the same text.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/manta-ray/manta/sdk/data"
	"github.com/manta-ray/manta/sdk/ray"
)

// words splits a line into lower-case words, a row each.
var words = data.FlatMapFn("examples.words", func(_ context.Context, r data.Row) ([]data.Row, error) {
	var out []data.Row
	for _, w := range strings.Fields(strings.ToLower(r["line"].(string))) {
		w = strings.Trim(w, ".,;:!?\"'()")
		if w != "" {
			out = append(out, data.Row{"word": w})
		}
	}
	return out, nil
})

var text = []string{
	"The quick brown fox jumps over the lazy dog.",
	"A dog is a good friend; the fox is not.",
	"Quick, quick! said the dog to the fox.",
}

func main() {
	ray.Main(func(ctx context.Context) error {
		if err := ray.Init(ctx); err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "wordcount-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		want := map[string]int64{}
		for f := 0; f < 3; f++ {
			var b strings.Builder
			for i := 0; i < 200; i++ {
				line := text[(f+i)%len(text)]
				j, _ := json.Marshal(map[string]string{"line": line})
				b.Write(j)
				b.WriteByte('\n')
				for _, w := range strings.Fields(strings.ToLower(line)) {
					if w = strings.Trim(w, ".,;:!?\"'()"); w != "" {
						want[w]++
					}
				}
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("part-%d.jsonl", f)), []byte(b.String()), 0o644); err != nil {
				return err
			}
		}
		counts := data.ReadJSONL([]string{dir}, data.SplitBytes(4096)).FlatMap(words).GroupBy("word").Aggregate(data.Count())
		rows, err := counts.TakeAll(ctx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			fmt.Printf("%-8s %d\n", r["word"], r["count()"])
			if want[r["word"].(string)] != r["count()"].(int64) {
				return fmt.Errorf("word %q: counted %v, want %d", r["word"], r["count()"], want[r["word"].(string)])
			}
		}
		if len(rows) != len(want) {
			return fmt.Errorf("%d words, want %d", len(rows), len(want))
		}
		fmt.Print(counts.Stats())
		return nil
	})
}
