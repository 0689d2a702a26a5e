package logmonitor

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A worker's log file is worker-<workerID>-<jobID>-<pid>.log in the node's
// log directory, as Ray names its worker-<id>-<job>-<pid>.out/.err (one
// file here: stdout and stderr share a pipe, so their lines keep their
// order and a marker on either attributes both). Worker IDs hold no '-'.
const (
	filePrefix = "worker-"
	fileSuffix = ".log"
)

// FileName is the log file name of a worker.
func FileName(workerID, jobID string, pid int) string {
	return filePrefix + workerID + "-" + jobID + "-" + strconv.Itoa(pid) + fileSuffix
}

// File is one worker's log file.
type File struct {
	Path     string
	WorkerID string
	JobID    string
	PID      int
}

// ParseFileName parses a worker log file's base name (not a backup's).
func ParseFileName(name string) (File, bool) {
	s, ok := strings.CutPrefix(name, filePrefix)
	if !ok {
		return File{}, false
	}
	if s, ok = strings.CutSuffix(s, fileSuffix); !ok {
		return File{}, false
	}
	wid, rest, ok := strings.Cut(s, "-")
	if !ok || wid == "" {
		return File{}, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return File{}, false
	}
	pid, err := strconv.Atoi(rest[i+1:])
	if err != nil {
		return File{}, false
	}
	return File{WorkerID: wid, JobID: rest[:i], PID: pid}, true
}

// ListFiles lists the worker log files in dir (a missing dir has none).
func ListFiles(dir string) ([]File, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []File
	for _, e := range ents {
		if f, ok := ParseFileName(e.Name()); ok {
			f.Path = filepath.Join(dir, e.Name())
			out = append(out, f)
		}
	}
	return out, nil
}

// PruneExited removes the log files (with their backups) of exited
// workers beyond the newest keep, by modification time, so that a node's
// log directory stays bounded in files as well as per file. live holds the
// workers that may still write.
func PruneExited(dir string, keep int, live map[string]bool) (int, error) {
	files, err := ListFiles(dir)
	if err != nil {
		return 0, err
	}
	type aged struct {
		path string
		mod  time.Time
	}
	var exited []aged
	for _, f := range files {
		if live[f.WorkerID] {
			continue
		}
		st, err := os.Stat(f.Path)
		if err != nil {
			continue
		}
		exited = append(exited, aged{f.Path, st.ModTime()})
	}
	if len(exited) <= keep {
		return 0, nil
	}
	sort.Slice(exited, func(i, j int) bool { return exited[i].mod.Before(exited[j].mod) })
	n := 0
	for _, a := range exited[:len(exited)-keep] {
		for i := 1; ; i++ {
			if os.Remove(BackupPath(a.path, i)) != nil {
				break
			}
		}
		if err := os.Remove(a.path); err == nil {
			n++
		}
	}
	return n, nil
}
