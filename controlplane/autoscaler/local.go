package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// LocalOptions configure the local provider.
type LocalOptions struct {
	// Binary is the manta binary; default os.Executable().
	Binary string
	// Dir holds one directory per instance (data dir, log, pid file). The
	// heads of one local cluster share it, so any leader can see and stop
	// the raylets another one launched.
	Dir string
	// Heads returns the control plane's addresses the raylets join.
	Heads func() []string
	// TokenFile holds the cluster token the raylets present.
	TokenFile string
	// ExtraArgs are added to every raylet's command line (e.g. TLS files,
	// --object-store-memory).
	ExtraArgs []string
	Logger    *zap.Logger
}

// Local launches raylets as processes on this machine (`manta start
// --address HEADS`). A raylet is in its own session and outlives the head
// that launched it if that head is killed (a new leader adopts it through
// its pid file); Close stops the ones this provider started.
type Local struct {
	o   LocalOptions
	log *zap.Logger

	mu       sync.Mutex
	children map[string]*exec.Cmd
	wg       sync.WaitGroup
}

// NewLocal returns a local provider.
func NewLocal(o LocalOptions) (*Local, error) {
	if o.Binary == "" {
		b, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Binary = b
	}
	if o.Dir == "" {
		return nil, errors.New("local provider: Dir is required")
	}
	if o.Heads == nil {
		return nil, errors.New("local provider: Heads is required")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Local{o: o, log: o.Logger.Named("local-provider"), children: map[string]*exec.Cmd{}}, nil
}

func (l *Local) pidFile(id string) string { return filepath.Join(l.o.Dir, id, "pid") }

// Launch starts the instance's raylet unless its pid file names a live one.
func (l *Local) Launch(ctx context.Context, inst Instance) error {
	if pid, ok := readPID(l.pidFile(inst.ID)); ok && alive(pid, inst.ID) {
		return nil
	}
	dir := filepath.Join(l.o.Dir, inst.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// A head killed between starting the raylet and writing its pid file
	// left it running without one: find it rather than start a second.
	if pid := findRaylet(inst.ID); pid > 0 {
		return writePID(l.pidFile(inst.ID), pid)
	}
	args := []string{"start", "--address", strings.Join(l.o.Heads(), ","),
		"--data-dir", filepath.Join(dir, "data"), "--port", "0"}
	if l.o.TokenFile != "" {
		args = append(args, "--token-file", l.o.TokenFile)
	}
	args = append(args, RayletArgs(inst)...)
	args = append(args, l.o.ExtraArgs...)
	logf, err := os.OpenFile(filepath.Join(dir, "raylet.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(l.o.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: it survives the head that launched it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start raylet %s: %w", inst.ID, err)
	}
	if err := writePID(l.pidFile(inst.ID), cmd.Process.Pid); err != nil {
		l.log.Warn("write pid file", zap.String("instance", inst.ID), zap.Error(err))
	}
	l.mu.Lock()
	l.children[inst.ID] = cmd
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		_ = cmd.Wait() // reap it; Instances sees the exit through the pid
	}()
	l.log.Info("raylet launched", zap.String("instance", inst.ID), zap.Int("pid", cmd.Process.Pid), zap.Strings("args", args))
	return nil
}

// RayletArgs are the `manta start` flags that give an instance's raylet
// its node ID, its type's resources and its labels. CPU and GPU are always
// given, so a node offers only what its type says.
func RayletArgs(inst Instance) []string {
	args := append([]string{"--node-id", inst.ID}, resourceArgs(inst.Type.Resources)...)
	labels := inst.Labels()
	var kv []string
	for _, k := range sortedKeys(labels) {
		kv = append(kv, k+"="+labels[k])
	}
	return append(args, "--labels", strings.Join(kv, ","))
}

func resourceArgs(res map[string]float64) []string {
	args := []string{"--num-cpus", strconv.FormatFloat(res["CPU"], 'g', -1, 64),
		"--num-gpus", strconv.FormatFloat(res["GPU"], 'g', -1, 64)}
	if m := res["memory"]; m > 0 {
		args = append(args, "--memory", strconv.FormatFloat(m, 'f', 0, 64))
	}
	var custom []string
	for _, k := range sortedKeys(res) {
		if k == "CPU" || k == "GPU" || k == "memory" {
			continue
		}
		custom = append(custom, k+"="+strconv.FormatFloat(res[k], 'g', -1, 64))
	}
	if len(custom) > 0 {
		args = append(args, "--resources", strings.Join(custom, ","))
	}
	return args
}

// Terminate stops the instance's raylet: SIGTERM, then SIGKILL after 5s.
func (l *Local) Terminate(ctx context.Context, id string) error {
	pid, ok := readPID(l.pidFile(id))
	if !ok {
		return nil
	}
	if alive(pid, id) {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid, id) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond) // polling another session's process: no handle to wait on
		}
		if alive(pid, id) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return os.Remove(l.pidFile(id))
}

// Instances lists the instances with a pid file: running while the process lives.
func (l *Local) Instances(context.Context) (map[string]InstanceStatus, error) {
	ents, err := os.ReadDir(l.o.Dir)
	if err != nil {
		return nil, err
	}
	out := map[string]InstanceStatus{}
	for _, e := range ents {
		pid, ok := readPID(l.pidFile(e.Name()))
		if !ok {
			continue
		}
		if alive(pid, e.Name()) {
			out[e.Name()] = StatusRunning
		} else {
			out[e.Name()] = StatusFailed
		}
	}
	return out, nil
}

// Close stops the raylets this provider started and reaps them.
func (l *Local) Close() error {
	l.mu.Lock()
	ids := make([]string, 0, len(l.children))
	for id := range l.children {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	for _, id := range ids {
		_ = l.Terminate(context.Background(), id)
	}
	l.wg.Wait()
	return nil
}

// PIDs lists the pids of the raylets under dir (for tests and `manta up`
// to stop the ones a killed head left behind).
func PIDs(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var out []int
	for _, e := range ents {
		if pid, ok := readPID(filepath.Join(dir, e.Name(), "pid")); ok {
			out = append(out, pid)
		}
	}
	return out
}

func readPID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// alive says whether pid is a live (not zombie) process whose command line
// names the instance (a recycled pid is not it).
func alive(pid int, id string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), id)
}

func writePID(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// findRaylet returns the pid of a live `manta start ... --node-id id`
// process, or 0.
func findRaylet(id string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := "\x00--node-id\x00" + id + "\x00"
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), want) && alive(pid, id) {
			return pid
		}
	}
	return 0
}
