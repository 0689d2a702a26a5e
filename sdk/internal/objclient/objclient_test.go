package objclient

import (
	"bytes"
	"context"
	"errors"
	"testing"

	pb "github.com/manta-ray/manta/proto/rayletpb"
	"github.com/manta-ray/manta/raylet"
)

// read reads an object through c and returns a copy of its bytes and
// whether they were mapped in place (and held by the client's mapping).
func read(t *testing.T, c *Client, v *pb.ObjectValue, n uint32) (data []byte, mapped, held bool) {
	t.Helper()
	err := c.Read(context.Background(), v, objectID(n), "owner-1", func(b []byte, _ pb.Format, m bool) error {
		data, mapped, held = append([]byte(nil), b...), m, c.Holds(b)
		return nil
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return data, mapped, held
}

func TestStoreLeavesSmallValuesInline(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaServed)
	c := newClient(t, n, r)
	v := &pb.ObjectValue{Data: pattern(testLimit, 1), Format: pb.Format_FORMAT_RAW}
	got, err := c.Store(context.Background(), objectID(1), "owner-1", v)
	if err != nil {
		t.Fatal(err)
	}
	if got != v {
		t.Fatalf("a value of %d bytes (the limit) was stored: %+v", testLimit, got)
	}
	data, mapped, _ := read(t, c, got, 1)
	if mapped || !bytes.Equal(data, v.Data) {
		t.Fatal("an inline value was not read as it is")
	}
	for _, rpc := range []string{"CreateObject", "PutObject", "MapObjects", "GetObject"} {
		if k := r.called(rpc); k != 0 {
			t.Fatalf("an inline value took %d %s calls", k, rpc)
		}
	}
}

func TestStoreAndReadInPlace(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaServed)
	c := newClient(t, n, r)
	data := pattern(256<<10, 2)
	v, err := c.Store(context.Background(), objectID(1), "owner-1", &pb.ObjectValue{Data: data, Format: pb.Format_FORMAT_RAW})
	if err != nil {
		t.Fatal(err)
	}
	if v.Location != home || v.Format != pb.Format_FORMAT_RAW || v.Data != nil {
		t.Fatalf("stored value %+v: want the local raylet's location, the format, no bytes", v)
	}
	if !bytes.Equal(r.bytesOf(objectID(1)), data) || r.called("PutObject") != 0 {
		t.Fatal("the value was not written into the arena")
	}
	got, mapped, held := read(t, c, v, 1)
	if !mapped || !held || !bytes.Equal(got, data) {
		t.Fatalf("read mapped=%v held=%v equal=%v: want the arena's bytes in place", mapped, held, bytes.Equal(got, data))
	}
	if c.MappedReads() != 1 {
		t.Fatalf("MappedReads %d; want 1", c.MappedReads())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned != 0 || len(r.released) != 1 || r.released[0] != objectID(1) {
		t.Fatalf("pins left %d, released %v: want the read's pin released", r.pinned, r.released)
	}
	for i := range r.clients {
		if r.clients[i] != testClient || r.jobs[i] != testJob {
			t.Fatalf("the raylet saw client %q job %q; want %q %q", r.clients[i], r.jobs[i], testClient, testJob)
		}
	}
}

func TestMapPinsUntilRelease(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaServed)
	c := newClient(t, n, r)
	data := pattern(8<<10, 3)
	r.put(objectID(1), data, pb.Format_FORMAT_RAW)
	view, format, release, err := c.Map(context.Background(), &pb.ObjectValue{Location: home}, objectID(1), "owner-1")
	if err != nil || view == nil {
		t.Fatalf("map: %v (view %v)", err, view != nil)
	}
	if format != pb.Format_FORMAT_RAW || !bytes.Equal(view, data) || !c.Holds(view) || cap(view) != len(view) {
		t.Fatal("the view is not the object's bytes in the client's mapping, capped at its size")
	}
	r.mu.Lock()
	pinned := r.pinned
	r.mu.Unlock()
	if pinned != 1 {
		t.Fatalf("%d pins while the view is held; want 1", pinned)
	}
	release()
	r.mu.Lock()
	pinned = r.pinned
	r.mu.Unlock()
	if pinned != 0 {
		t.Fatalf("%d pins after release; want 0", pinned)
	}
	if c.Holds(append([]byte(nil), view...)) {
		t.Fatal("Holds is true for a copy")
	}
}

func TestStreamsWhenRayletServesNoArena(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaNone)
	c := newClient(t, n, r)
	for i := uint32(1); i <= 2; i++ {
		data := pattern(64<<10, byte(i))
		v, err := c.Store(context.Background(), objectID(i), "owner-1", &pb.ObjectValue{Data: data, Format: pb.Format_FORMAT_RAW})
		if err != nil {
			t.Fatal(err)
		}
		if v.Location != home {
			t.Fatalf("stored value %+v: want the local raylet's location", v)
		}
		if !bytes.Equal(r.bytesOf(objectID(i)), data) {
			t.Fatal("the raylet did not get the value's bytes")
		}
		got, mapped, held := read(t, c, v, i)
		if mapped || held || !bytes.Equal(got, data) {
			t.Fatalf("read mapped=%v held=%v: want the bytes streamed into the heap", mapped, held)
		}
	}
	// Asked once: later objects stream without asking again.
	if r.called("CreateObject") != 1 || r.called("MapObjects") != 0 || r.called("PutObject") != 2 || r.called("GetObject") != 2 {
		t.Fatalf("calls %v: want one CreateObject, then only streams", r.calls)
	}
	if c.MappedReads() != 0 {
		t.Fatalf("MappedReads %d; want 0", c.MappedReads())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobs[0] != testJob || r.owners[0] != "owner-1" {
		t.Fatalf("a put carried job %q owner %q", r.jobs[0], r.owners[0])
	}
}

func TestMapUnimplementedFallsBackToPull(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaNone)
	c := newClient(t, n, r)
	data := pattern(64<<10, 4)
	r.put(objectID(1), data, pb.Format_FORMAT_MSGPACK)
	got, mapped, _ := read(t, c, &pb.ObjectValue{Location: home}, 1)
	if mapped || !bytes.Equal(got, data) {
		t.Fatal("the object was not pulled")
	}
	read(t, c, &pb.ObjectValue{Location: home}, 1)
	if r.called("MapObjects") != 1 || r.called("GetObject") != 2 {
		t.Fatalf("calls %v: want one MapObjects, then only streams", r.calls)
	}
}

func TestUnopenableArenaFallsBackToStream(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaUnopenable)
	c := newClient(t, n, r)
	data := pattern(64<<10, 5)
	v, err := c.Store(context.Background(), objectID(1), "owner-1", &pb.ObjectValue{Data: data, Format: pb.Format_FORMAT_RAW})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	aborted := len(r.aborted) == 1 && r.aborted[0] == objectID(1)
	r.mu.Unlock()
	if !aborted {
		t.Fatal("the creation in an arena that cannot be opened here was not aborted")
	}
	if !bytes.Equal(r.bytesOf(objectID(1)), data) || r.called("PutObject") != 1 {
		t.Fatal("the value was not streamed instead")
	}
	got, mapped, _ := read(t, c, v, 1)
	if mapped || !bytes.Equal(got, data) {
		t.Fatal("the object was not streamed back")
	}
	if r.called("CreateObject") != 1 || r.called("MapObjects") != 0 {
		t.Fatalf("calls %v: want no arena RPC after the arena failed to open", r.calls)
	}
}

func TestUnreadableArenaUnpinsAndPulls(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaUnopenable)
	c := newClient(t, n, r)
	data := pattern(64<<10, 6)
	r.put(objectID(1), data, pb.Format_FORMAT_RAW)
	got, mapped, _ := read(t, c, &pb.ObjectValue{Location: home}, 1)
	if mapped || !bytes.Equal(got, data) {
		t.Fatal("the object was not pulled")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned != 0 {
		t.Fatalf("%d pins left by a map whose arena could not be opened", r.pinned)
	}
}

func TestMapFailurePullsWithoutGivingUpTheArena(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaMapFails)
	c := newClient(t, n, r)
	data := pattern(64<<10, 7)
	r.put(objectID(1), data, pb.Format_FORMAT_RAW)
	for range 2 {
		if got, mapped, _ := read(t, c, &pb.ObjectValue{Location: home}, 1); mapped || !bytes.Equal(got, data) {
			t.Fatal("the object was not pulled")
		}
	}
	// A full store is no reason to stop asking.
	if r.called("MapObjects") != 2 {
		t.Fatalf("MapObjects called %d times; want 2", r.called("MapObjects"))
	}
}

func TestReadErrors(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaServed)
	c := newClient(t, n, r)
	sentinel := errors.New("converted")
	c.cfg.TaskError = func(e *pb.TaskError) error { return sentinel }
	// An object whose value is an error.
	v := &pb.ObjectValue{Error: &pb.TaskError{Kind: pb.ErrorKind_ERROR_APPLICATION, Message: "boom"}}
	if err := c.Read(context.Background(), v, objectID(1), "owner-1", nil); !errors.Is(err, sentinel) {
		t.Fatalf("reading an error value: %v; want the converted error", err)
	}
	// An object the raylet cannot make local.
	err := c.Read(context.Background(), &pb.ObjectValue{Location: home}, objectID(2), "owner-1", nil)
	if !errors.Is(err, sentinel) {
		t.Fatalf("reading an object the raylet lost: %v; want the converted error", err)
	}
}

func TestPull(t *testing.T) {
	data := pattern(2*raylet.ChunkBytes+1234, 8) // three chunks
	for _, tc := range []struct {
		name      string
		corrupt   int // chunks of node-a sent with a bad checksum
		failAfter int // node-a fails after this many chunks (-1: never)
		lost      bool
	}{
		{name: "whole", failAfter: -1},
		{name: "bad chunk refetched", corrupt: 1, failAfter: -1},
		{name: "source failed resumes at the next", failAfter: 1},
		{name: "every chunk bad gives up the source", corrupt: 100, failAfter: -1},
		{name: "no source", failAfter: 0, lost: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNetwork(t)
			local := newFakeRaylet(t, arenaNone)
			c := newClient(t, n, local)
			a, b := newFakeRaylet(t, arenaNone), newFakeRaylet(t, arenaNone)
			n.serve("node-a", a)
			n.serve("node-b", b)
			a.put(objectID(1), data, pb.Format_FORMAT_RAW)
			a.corrupt, a.failAfter = tc.corrupt, tc.failAfter
			if !tc.lost {
				b.put(objectID(1), data, pb.Format_FORMAT_RAW)
			}
			got, format, err := c.Pull(context.Background(), &pb.ObjectValue{Location: "node-a", Copies: []string{"node-b"}}, objectID(1))
			if tc.lost {
				if !errors.Is(err, ErrObjectLost) {
					t.Fatalf("pull: %v; want ErrObjectLost", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if format != pb.Format_FORMAT_RAW || !bytes.Equal(got, data) {
				t.Fatal("pulled bytes differ")
			}
		})
	}
}

func TestClosedClientStreams(t *testing.T) {
	n := newNetwork(t)
	r := newFakeRaylet(t, arenaServed)
	c := newClient(t, n, r)
	data := pattern(64<<10, 9)
	r.put(objectID(1), data, pb.Format_FORMAT_RAW)
	c.Close()
	c.Close() // idempotent
	got, mapped, _ := read(t, c, &pb.ObjectValue{Location: home}, 1)
	if mapped || !bytes.Equal(got, data) {
		t.Fatal("a closed client did not stream the object")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned != 0 {
		t.Fatalf("%d pins left by a closed client", r.pinned)
	}
}
