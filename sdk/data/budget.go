package data

import (
	"context"
	"sync"
)

// budget counts the bytes of blocks in flight (produced and not yet
// consumed by the next operator) so a streaming execution keeps the
// object store under a limit. Only the source stage waits for room: the
// stages after it turn blocks in flight into others and must always be
// able to go on, or a full budget would deadlock the stream; so the
// stream is throttled where new data enters it, as Ray Data's
// backpressure does.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	limit int64
	used  int64 // held: blocks in flight, and estimates for running tasks
	live  int64 // bytes of blocks made and not yet consumed
	peak  int64 // of live
}

func newBudget(limit int64) *budget {
	b := &budget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire takes n bytes; wait says whether to wait for room (a block
// larger than the whole budget still goes when nothing else is held).
func (b *budget) acquire(ctx context.Context, n int64, wait bool) error {
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for wait && b.used > 0 && b.used+n > b.limit {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.cond.Wait()
	}
	b.add(n)
	return nil
}

// adjust corrects a held amount to the block's real size (+d or -d).
func (b *budget) adjust(d int64) {
	b.mu.Lock()
	b.add(d)
	b.mu.Unlock()
}

// produced counts a block made (n bytes now in the store).
func (b *budget) produced(n int64) {
	b.mu.Lock()
	b.live += n
	b.peak = max(b.peak, b.live)
	b.mu.Unlock()
}

// release gives back the n bytes of a consumed block.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.add(-n)
	b.live -= n
	b.mu.Unlock()
}

func (b *budget) add(d int64) {
	b.used += d
	if d < 0 {
		b.cond.Broadcast()
	}
}

// peakBytes is the most bytes of blocks that were in the store at once.
func (b *budget) peakBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}
