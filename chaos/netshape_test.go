package chaos

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/manta-ray/manta/internal/launcher"
)

// newTestNetwork makes a netns network with hosts a and b, or skips.
func newTestNetwork(t *testing.T) *launcher.Network {
	t.Helper()
	if why := launcher.NetnsSupport(); why != "" {
		t.Skip(why)
	}
	if why := NetShapeSupport(); why != "" {
		t.Skip(why)
	}
	n, err := launcher.NewNetwork(nil)
	if errors.Is(err, launcher.ErrHostsUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, h := range []string{"a", "b"} {
		if _, err := n.AddHost(h); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// echoServer listens on host h and echoes every connection until the
// test ends.
func echoServer(t *testing.T, n *launcher.Network, h string) string {
	t.Helper()
	var l net.Listener
	if err := inNetns("/run/netns/"+n.Host(h).Namespace, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(n.Host(h).IP, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// roundTrip dials addr from host h, sends a byte and reads it back within
// 2 s; it returns how long the exchange took.
func roundTrip(n *launcher.Network, h, addr string) (time.Duration, error) {
	var c net.Conn
	start := time.Now()
	if err := inNetns("/run/netns/"+n.Host(h).Namespace, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// TestNetShaperDelayDropAndHeal: a delayed link still carries traffic
// (held packets are released, never lost), a one-way cut stops a round
// trip, and healing restores it.
func TestNetShaperDelayDropAndHeal(t *testing.T) {
	n := newTestNetwork(t)
	s := NewNetShaper(n, 1, nil)
	t.Cleanup(func() { s.HealAll() })
	addr := echoServer(t, n, "b")
	if _, err := roundTrip(n, "a", addr); err != nil {
		t.Fatalf("a cannot reach b before any fault: %v", err)
	}
	undo, err := s.Impair("a", []string{"b"}, LinkSpec{Delay: 50 * time.Millisecond, Jitter: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d, err := roundTrip(n, "a", addr)
	if err != nil {
		t.Fatalf("a cannot reach b over a delayed link: %v", err)
	}
	// A connection takes two round trips; each of a's packets waits at
	// least 30 ms, so it cannot be faster (a lower bound only).
	if d < 60*time.Millisecond {
		t.Errorf("round trips over a 50±20 ms link took %v: the delay is not applied", d)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	// One direction only: b's packets to a vanish.
	undo, err = s.Impair("b", []string{"a"}, LinkSpec{Drop: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(n, "a", addr); err == nil {
		t.Fatal("a reached b and back through a one-way cut")
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(n, "a", addr); err != nil {
		t.Fatalf("a cannot reach b after healing: %v", err)
	}
}
