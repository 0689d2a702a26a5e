package serve

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Batch groups single calls into calls of fn with up to maxSize requests,
// as Ray's @serve.batch: a batch goes when it is full or maxWait after its
// first request arrived. fn must answer one Resp per Req, in order. Use
// the returned function as (part of) a handler; the deployment's
// MaxOngoingRequests must be at least maxSize for batches to fill.
func Batch[Req, Resp any](maxSize int, maxWait time.Duration, fn func(context.Context, []Req) ([]Resp, error)) func(context.Context, Req) (Resp, error) {
	if maxSize < 1 {
		maxSize = 1
	}
	b := &batcher[Req, Resp]{max: maxSize, wait: maxWait, fn: fn}
	return b.call
}

type batchItem[Req, Resp any] struct {
	ctx  context.Context
	req  Req
	done chan batchResult[Resp]
}

type batchResult[Resp any] struct {
	resp Resp
	err  error
}

type batcher[Req, Resp any] struct {
	max  int
	wait time.Duration
	fn   func(context.Context, []Req) ([]Resp, error)

	mu      sync.Mutex
	pending []*batchItem[Req, Resp]
	timer   *time.Timer
}

func (b *batcher[Req, Resp]) call(ctx context.Context, req Req) (Resp, error) {
	it := &batchItem[Req, Resp]{ctx: ctx, req: req, done: make(chan batchResult[Resp], 1)}
	b.mu.Lock()
	b.pending = append(b.pending, it)
	switch {
	case len(b.pending) >= b.max:
		b.flushLocked()
	case len(b.pending) == 1:
		b.timer = time.AfterFunc(b.wait, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.flushLocked()
		})
	}
	b.mu.Unlock()
	select {
	case r := <-it.done:
		return r.resp, r.err
	case <-ctx.Done():
		var zero Resp
		return zero, ctx.Err()
	}
}

// flushLocked runs the pending batch in a goroutine of its own; it ends
// when fn returns.
func (b *batcher[Req, Resp]) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	items := b.pending
	b.pending = nil
	if len(items) == 0 {
		return
	}
	go func() {
		reqs := make([]Req, len(items))
		for i, it := range items {
			reqs[i] = it.req
		}
		// The batch outlives any one caller's cancellation.
		resps, err := b.fn(context.WithoutCancel(items[0].ctx), reqs)
		if err == nil && len(resps) != len(reqs) {
			err = fmt.Errorf("serve: batch handler answered %d responses for %d requests", len(resps), len(reqs))
		}
		for i, it := range items {
			r := batchResult[Resp]{err: err}
			if err == nil {
				r.resp = resps[i]
			}
			it.done <- r
		}
	}()
}
