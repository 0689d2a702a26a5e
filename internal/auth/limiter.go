package auth

import (
	"sync"
	"time"
)

// FailureLimiter counts failed authentications per source (a peer's IP)
// in fixed windows. Past Max failures in a window a source is limited:
// its failures are refused as rate-limited and no longer logged, so a
// scanner costs a log line per window, not per attempt. A valid token is
// never refused for its source's failures (callers check it first), so
// clients behind the same NAT as an attacker keep working.
type FailureLimiter struct {
	Max    int           // failures per window before limiting; default 50
	Window time.Duration // default 10s
	Now    func() time.Time

	mu      sync.Mutex
	sources map[string]*failures
}

type failures struct {
	start time.Time
	count int
}

// maxSources bounds the table; stale windows are dropped past it.
const maxSources = 4096

// Failed records a failure from src and reports whether this one should be
// logged (the first of its window) and whether src is now limited.
func (l *FailureLimiter) Failed(src string) (logIt, limited bool) {
	max, window := l.Max, l.Window
	if max == 0 {
		max = 50
	}
	if window == 0 {
		window = 10 * time.Second
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources == nil {
		l.sources = map[string]*failures{}
	}
	f := l.sources[src]
	if f == nil || t.Sub(f.start) >= window {
		if f == nil && len(l.sources) >= maxSources {
			for k, v := range l.sources {
				if t.Sub(v.start) >= window {
					delete(l.sources, k)
				}
			}
		}
		f = &failures{start: t}
		l.sources[src] = f
	}
	f.count++
	return f.count == 1, f.count > max
}
