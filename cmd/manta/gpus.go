package main

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// detectGPUs counts the machine's NVIDIA GPUs as Ray does, through
// nvidia-smi; 0 when it is missing or fails.
func detectGPUs() float64 {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--query-gpu=index", "--format=csv,noheader").Output()
	if err != nil {
		return 0
	}
	return float64(countGPUIndices(string(out)))
}

// countGPUIndices counts the non-empty lines of nvidia-smi's index list.
func countGPUIndices(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}
