package data

import (
	"fmt"
	"os"
	"sync"

	"github.com/mattn/go-isatty"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// progressMode is whether an execution shows progress bars.
type progressMode uint8

const (
	progressAuto progressMode = iota // when stderr is a terminal
	progressOn
	progressOff
)

// progress draws a bar per stage (blocks done; rows and bytes beside) on
// stderr. Off (nil p) when stderr is not a terminal or the dataset says so.
type progress struct {
	mu   sync.Mutex
	p    *mpb.Progress
	bars map[*stage]*stageBar
}

type stageBar struct {
	bar         *mpb.Bar
	known       bool // the total is the number of read tasks
	rows, bytes int64
}

func newProgress(m progressMode) *progress {
	on := m == progressOn || (m == progressAuto && isatty.IsTerminal(os.Stderr.Fd()))
	if !on {
		return &progress{}
	}
	return &progress{p: mpb.New(mpb.WithOutput(os.Stderr)), bars: map[*stage]*stageBar{}}
}

func (p *progress) add(s *stage, total int) {
	if p.p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sb := &stageBar{known: total > 0}
	sb.bar = p.p.AddBar(int64(total),
		mpb.PrependDecorators(decor.Name(s.label(), decor.WCSyncSpaceR), decor.CountersNoUnit("%d blocks")),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			p.mu.Lock()
			defer p.mu.Unlock()
			return fmt.Sprintf("%d rows, %d MiB", sb.rows, sb.bytes>>20)
		})))
	p.bars[s] = sb
}

func (p *progress) done(s *stage, m blockMeta) {
	if p.p == nil {
		return
	}
	p.mu.Lock()
	sb := p.bars[s]
	sb.rows += m.Rows
	sb.bytes += m.Bytes
	p.mu.Unlock()
	if !sb.known {
		// An unknown total grows with the count.
		sb.bar.SetTotal(sb.bar.Current()+1, false)
	}
	sb.bar.Increment()
}

func (p *progress) close() {
	if p.p == nil {
		return
	}
	p.mu.Lock()
	for _, sb := range p.bars {
		sb.bar.SetTotal(-1, true)
	}
	p.mu.Unlock()
	p.p.Wait()
}
