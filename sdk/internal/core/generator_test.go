package core

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/sdk/internal/memstore"
)

// newGenOwner is the owner's side of one generator task (whose end never
// completes here), over a real object table.
func newGenOwner(t *testing.T, backpressure int) (*Worker, ids.TaskID, *Generator) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &Worker{address: testOwner, mem: memstore.New(memstore.Config{}), ctx: ctx, cancel: cancel}
	tid := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), taskCounter.Add(1))
	c.gens.open(tid, backpressure, "", nil)
	_, keys := c.newReturns(tid, 1, "")
	g, err := c.OpenGenerator(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	return c, tid, g
}

func report(c *Worker, ctx context.Context, tid ids.TaskID, i int) error {
	_, err := c.ReportGeneratorItem(ctx, &pb.GeneratorItemRequest{TaskId: tid[:], Index: uint64(i),
		Value: &pb.ObjectValue{Data: []byte{byte(i)}}})
	return err
}

func TestGeneratorOwnerTakesItemsInOrderOnce(t *testing.T) {
	c, tid, g := newGenOwner(t, 0)
	ctx := context.Background()
	for _, i := range []int{0, 1, 0, 1, 2} { // a retry repeats 0 and 1
		if err := report(c, ctx, tid, i); err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if err := report(c, ctx, tid, 5); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("item 5 before 3: %v; want FailedPrecondition", err)
	}
	for i := range 3 {
		k, err := g.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if k.ID != ids.ReturnID(tid, uint32(i+2)) {
			t.Fatalf("item %d is object %s", i, k.ID)
		}
		if v := c.mem.Value(c.mem.Get(k.ID)); v.Data[0] != byte(i) {
			t.Fatalf("item %d has value %v", i, v.Data)
		}
	}
	if r, taken, _ := g.Stats(); r != 3 || taken != 3 {
		t.Fatalf("reported %d, taken %d", r, taken)
	}
}

func TestGeneratorOwnerRefusesBadReports(t *testing.T) {
	c, tid, g := newGenOwner(t, 0)
	ctx := context.Background()
	if _, err := c.ReportGeneratorItem(ctx, &pb.GeneratorItemRequest{TaskId: []byte("short")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad task_id: %v", err)
	}
	if _, err := c.ReportGeneratorItem(ctx, &pb.GeneratorItemRequest{TaskId: tid[:]}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no value: %v", err)
	}
	other := ids.NewTaskID(testJob, ids.DriverTaskID(testJob), taskCounter.Add(1))
	if err := report(c, ctx, other, 0); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown task: %v", err)
	}
	g.Close()
	if err := report(c, ctx, tid, 0); status.Code(err) != codes.NotFound {
		t.Fatalf("after Close: %v", err)
	}
}

func TestGeneratorOwnerHoldsReportsUnderBackpressure(t *testing.T) {
	c, tid, g := newGenOwner(t, 2)
	ctx := context.Background()
	for i := range 2 {
		if err := report(c, ctx, tid, i); err != nil {
			t.Fatal(err)
		}
	}
	held := make(chan error, 1)
	go func() { held <- report(c, ctx, tid, 2) }()
	waitHeld := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, _, h := g.Stats(); h == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("held reports never became %d", want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitHeld(1)
	select {
	case err := <-held:
		t.Fatalf("the report of item 2 returned (%v) with 2 items unconsumed", err)
	default:
	}
	if r, _, _ := g.Stats(); r != 2 {
		t.Fatalf("reported %d while held", r)
	}
	if _, err := g.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatalf("the held report: %v", err)
	}
	// Items 1 and 2 are unconsumed now: item 3 is held, and a held
	// report whose producer gives up returns its context's error.
	cctx, cancel := context.WithCancel(ctx)
	go func() { held <- report(c, cctx, tid, 3) }()
	waitHeld(1)
	cancel()
	if err := <-held; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled held report: %v; want Canceled", err)
	}
	if r, _, h := g.Stats(); r != 3 || h != 0 {
		t.Fatalf("after the cancel: reported %d, held %d", r, h)
	}
}

// freeRecorder is a raylet that records the objects it is told to free.
type freeRecorder struct {
	pb.UnimplementedRayletServer
	freed chan ids.ObjectID
}

func (f *freeRecorder) FreeObjects(_ context.Context, req *pb.FreeObjectsRequest) (*pb.FreeObjectsReply, error) {
	for _, b := range req.ObjectIds {
		id, _ := ids.ObjectFromBytes(b)
		f.freed <- id
	}
	return &pb.FreeObjectsReply{}, nil
}

func TestGeneratorOwnerFreesARetrysRepeatOnAnotherNode(t *testing.T) {
	c, tid, _ := newGenOwner(t, 0)
	c.log, c.conns = zap.NewNop(), map[string]*grpc.ClientConn{}
	t.Cleanup(func() {
		c.cancel()
		c.wg.Wait()
		for _, cc := range c.conns {
			cc.Close()
		}
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &freeRecorder{freed: make(chan ids.ObjectID, 4)}
	srv := grpc.NewServer()
	pb.RegisterRayletServer(srv, rec)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	other := lis.Addr().String()

	ctx := context.Background()
	item := func(i int, loc string) {
		t.Helper()
		if _, err := c.ReportGeneratorItem(ctx, &pb.GeneratorItemRequest{TaskId: tid[:], Index: uint64(i),
			Value: &pb.ObjectValue{Location: loc}}); err != nil {
			t.Fatal(err)
		}
	}
	item(0, "first-node:1")
	item(0, "first-node:1") // the same node kept the first copy: nothing to free
	item(0, other)          // the retry ran elsewhere: its copy goes
	select {
	case id := <-rec.freed:
		if id != ids.ReturnID(tid, 2) {
			t.Fatalf("freed %s; want item 0's object", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the repeat's copy was not freed")
	}
	if v := c.mem.Value(c.mem.Get(ids.ReturnID(tid, 2))); v.Location != "first-node:1" {
		t.Fatalf("item 0 is now at %q", v.Location)
	}
}
