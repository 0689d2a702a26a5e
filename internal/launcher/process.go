package launcher

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/manta-ray/manta/internal/currentcluster"
)

// ErrNotRunning is returned when a signal is asked for a head that is not
// running.
var ErrNotRunning = errors.New("launcher: head is not running")

// stopGrace is how long Stop and Close wait after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// proc is one child process and its reaper. done closes once cmd.Wait has
// returned; err is Wait's result, readable after done.
type proc struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
	err  error
}

// spawn starts binary with args, output appended to logPath, in its own
// process group (a terminal's Ctrl-C reaches only the launcher, which stops
// its children itself) and killed if the launcher dies. Linux sends the
// death signal when the OS thread that forked the child exits; Go keeps its
// threads unless a goroutine exits while locked to one, so do not start
// heads from such a goroutine. The reaper goroutine is owned by c and
// counted in c.wg.
func (c *Cluster) spawn(host *Host, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child holds its own copy of the descriptor.
	defer logf.Close()
	cmd := exec.Command(c.opts.Binary, args...)
	if host != nil {
		cmd = host.Command(c.opts.Binary, args...)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The cluster is named as a whole by whoever launched it (manta up),
	// not by each head.
	cmd.Env = append(os.Environ(), currentcluster.EnvFile+"=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.opts.Binary, err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process unless it has been reaped.
func (p *proc) signal(sig os.Signal) error {
	if p.exited() {
		return ErrNotRunning
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *proc) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	<-p.done
	return nil
}

// terminate sends SIGTERM (then SIGCONT, so a paused process sees it),
// waits up to grace, then kills.
func (p *proc) terminate(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, ErrNotRunning) {
			<-p.done
			return nil
		}
		return err
	}
	p.signal(syscall.SIGCONT)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return p.kill()
	}
}

// exitDescription says how a reaped process ended.
func (p *proc) exitDescription() string {
	if p.err == nil {
		return "exited with status 0"
	}
	return p.err.Error()
}
