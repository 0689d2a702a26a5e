package workerpool

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/raylet/logmonitor"
)

// outputOf is where worker w's output goes: its rotated log file under
// LogDir (nil when there is none or it cannot be made), and Output.
func (p *Pool) outputOf(w *Worker) (io.Writer, *logmonitor.RotatingFile) {
	var file *logmonitor.RotatingFile
	if p.cfg.LogDir != "" {
		path := filepath.Join(p.cfg.LogDir, logmonitor.FileName(w.ID, w.JobID, w.PID))
		err := os.MkdirAll(p.cfg.LogDir, 0o700)
		if err == nil {
			file, err = logmonitor.OpenRotating(path, p.cfg.LogMaxBytes, p.cfg.LogBackups)
		}
		if err != nil {
			p.log.Warn("worker log file", zap.String("worker", w.ID), zap.Error(err))
		} else {
			w.LogPath = path
		}
	}
	switch {
	case file != nil && p.cfg.Output != nil:
		return io.MultiWriter(file, p.cfg.Output), file
	case file != nil:
		return file, file
	case p.cfg.Output != nil:
		return p.cfg.Output, nil
	}
	return io.Discard, nil
}

// copyOutput copies a worker's output pipe to out line by line (so a
// rotation falls between lines; a line longer than the buffer goes in
// pieces) until the pipe ends, then closes the pipe and the file, and
// closes done. A failing writer does not stop the copy: the pipe must be
// drained or the worker would block on a full pipe.
func (p *Pool) copyOutput(pr *os.File, out io.Writer, file *logmonitor.RotatingFile, done chan struct{}) {
	defer p.wg.Done()
	defer close(done)
	defer pr.Close()
	if file != nil {
		defer file.Close()
	}
	br := bufio.NewReaderSize(pr, logmonitor.MaxLine)
	warned := false
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			if _, werr := out.Write(b); werr != nil && !warned {
				warned = true
				p.log.Warn("write worker output", zap.Error(werr))
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
