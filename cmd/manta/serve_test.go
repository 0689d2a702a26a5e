package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// manta serve against a 1-head cluster without raylets: a malformed
// config is refused (exit 2) naming the field; a good one is recorded and
// shows in status (its replicas wait for a node); shutdown removes it.
func TestServeCLI(t *testing.T) {
	c := startCluster(t, 1)
	env := clusterEnv(c)
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := writeFile(bad, "binary: app\napplications:\n  - name: a\n    deployments: [{name: d}]\n"); err != nil {
		t.Fatal(err)
	}
	if r := mantaCmd(t, env, "", "serve", "deploy", bad); r.code != 2 || !strings.Contains(r.stderr, "applications[0].route_prefix") {
		t.Fatalf("bad config: %v", r)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := writeFile(good, "binary: app\napplications:\n  - name: a\n    route_prefix: /a\n    deployments: [{name: d, num_replicas: 2}]\n"); err != nil {
		t.Fatal(err)
	}
	if r := mantaCmd(t, env, "", "serve", "deploy", good); r.code != 0 || !strings.Contains(r.stdout, "deployed a at /a") {
		t.Fatalf("deploy: %v", r)
	}
	if r := mantaCmd(t, env, "", "serve", "status"); r.code != 0 || !strings.Contains(r.stdout, "application a") || !strings.Contains(r.stdout, "deployment d") {
		t.Fatalf("status: %v", r)
	}
	if r := mantaCmd(t, env, "", "serve", "shutdown"); r.code != 0 {
		t.Fatalf("shutdown: %v", r)
	}
	if r := mantaCmd(t, env, "", "serve", "status"); r.code != 0 || !strings.Contains(r.stdout, "no applications") {
		t.Fatalf("status after shutdown: %v", r)
	}
}
