package auth

import (
	"testing"
	"time"
)

func TestFailureLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := &FailureLimiter{Max: 3, Window: time.Second, Now: func() time.Time { return now }}
	var logged, limited int
	for range 10 {
		lg, lim := l.Failed("10.0.0.1")
		if lg {
			logged++
		}
		if lim {
			limited++
		}
	}
	if logged != 1 || limited != 7 {
		t.Fatalf("logged %d limited %d; want 1 and 7", logged, limited)
	}
	if lg, lim := l.Failed("10.0.0.2"); !lg || lim {
		t.Fatal("another source is limited too")
	}
	now = now.Add(time.Second)
	if lg, lim := l.Failed("10.0.0.1"); !lg || lim {
		t.Fatal("a new window still limits")
	}
}

func TestParseScope(t *testing.T) {
	for _, s := range []string{"read", "submit", "admin"} {
		sc, err := ParseScope(s)
		if err != nil || sc.String() != s {
			t.Fatalf("%s: %v %v", s, sc, err)
		}
	}
	if _, err := ParseScope("none"); err == nil {
		t.Fatal("none is not a token scope")
	}
	if !ScopeAdmin.Allows(ScopeSubmit) || ScopeRead.Allows(ScopeSubmit) {
		t.Fatal("scope order")
	}
}
