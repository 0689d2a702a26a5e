// Command jobapp is a job's entrypoint: submitted with
//
//	manta job submit --working-dir DIR --env GREETING=hello --go ./examples/jobapp
//
// it runs on a node of the cluster, in DIR's unpacked copy, and ray.Init
// joins that cluster (MANTA_ADDRESS, set by the job supervisor). It prints
// its data file and greeting, and checks a fan-out of tasks. Run by hand
// it starts an embedded cluster instead.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/manta-ray/manta/sdk/ray"
)

var square = ray.Func1("examples.jobapp.square", func(_ context.Context, x int) (int, error) { return x * x, nil })

// hold keeps its worker busy: with JOBAPP_HOLD set the job waits for a
// stop with a task running (tests check that stop ends the workers).
var hold = ray.Func1("examples.jobapp.hold", func(_ context.Context, d int) (int, error) {
	time.Sleep(time.Duration(d) * time.Second)
	return d, nil
})

func main() {
	ray.Main(func(ctx context.Context) error {
		data, err := os.ReadFile("data.txt")
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Println("no data.txt in the working dir")
		case err != nil:
			return err
		default:
			fmt.Printf("data.txt: %s\n", strings.TrimSpace(string(data)))
		}
		fmt.Printf("GREETING=%s\n", os.Getenv("GREETING"))
		if err := ray.Init(ctx); err != nil {
			return err
		}
		refs := make([]ray.ObjectRef[int], 10)
		for i := range refs {
			refs[i] = square.Remote(ctx, ray.Val(i))
		}
		sum := 0
		for _, r := range refs {
			v, err := ray.Get(ctx, r)
			if err != nil {
				return err
			}
			sum += v
		}
		fmt.Println("sum of squares 0..9 =", sum)
		if sum != 285 {
			return fmt.Errorf("got %d; want 285", sum)
		}
		if os.Getenv("JOBAPP_HOLD") != "" {
			_ = hold.Remote(ctx, ray.Val(3600))
			fmt.Println("holding until stopped")
			<-ctx.Done()
		}
		return nil
	})
}
