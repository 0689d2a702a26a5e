package workerpool

import (
	"bytes"
	"io"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/manta-ray/manta/raylet/logmonitor"
	"github.com/manta-ray/manta/raylet/workerlog"
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
		return io.MultiWriter(file, markerFilter{p.cfg.Output}), file
	case file != nil:
		return file, file
	case p.cfg.Output != nil:
		return markerFilter{p.cfg.Output}, nil
	}
	return io.Discard, nil
}

// markerFilter drops workerlog marker lines on their way to Config.Output,
// which a person reads. copyOutput writes whole lines, so a marker is
// never split across writes.
type markerFilter struct{ w io.Writer }

func (f markerFilter) Write(b []byte) (int, error) {
	n := len(b)
	var out []byte
	for rest := b; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		if _, ok := workerlog.Parse(line); !ok {
			out = append(out, line...)
		}
	}
	if len(out) == 0 {
		return n, nil
	}
	if _, err := f.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

// copyOutput copies a worker's output pipe to out until the pipe ends,
// then closes the pipe and the file, and closes done. It writes whole lines
// (up to a buffer of them per write, so a rotation falls between lines; a
// line longer than the buffer goes in pieces). A failing writer does not
// stop the copy: the pipe must be drained or the worker would block on it.
func (p *Pool) copyOutput(pr *os.File, out io.Writer, file *logmonitor.RotatingFile, done chan struct{}) {
	defer p.wg.Done()
	defer close(done)
	defer pr.Close()
	if file != nil {
		defer file.Close()
	}
	warned := false
	write := func(b []byte) {
		if _, err := out.Write(b); err != nil && !warned {
			warned = true
			p.log.Warn("write worker output", zap.Error(err))
		}
	}
	buf := make([]byte, logmonitor.MaxLine)
	n := 0
	for {
		k, err := pr.Read(buf[n:])
		n += k
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			write(buf[:i+1])
			n = copy(buf, buf[i+1:n])
		} else if n == len(buf) {
			write(buf)
			n = 0
		}
		if err != nil {
			if n > 0 {
				write(buf[:n])
			}
			return
		}
	}
}
