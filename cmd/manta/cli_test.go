package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCLI runs the client commands against one 3-head cluster of manta
// processes.
func TestCLI(t *testing.T) {
	c := startCluster(t, 3)
	env := clusterEnv(c)

	t.Run("StatusJSONShowsOneLeader", func(t *testing.T) {
		r := mantaCmd(t, env, "", "status", "--json")
		if r.code != 0 {
			t.Fatalf("status: %v", r)
		}
		st := decodeJSON[statusReport](t, r)
		if st.Leader == nil {
			t.Fatalf("no leader: %v", r)
		}
		leaders := 0
		for _, h := range st.Heads {
			if h.Error != "" {
				t.Errorf("head %s: %s", h.Address, h.Error)
			}
			if h.State == "Leader" {
				leaders++
			}
			if h.LeaderID != st.Leader.ID {
				t.Errorf("head %s names leader %q, status says %q", h.ID, h.LeaderID, st.Leader.ID)
			}
		}
		if len(st.Heads) != 3 || leaders != 1 {
			t.Fatalf("got %d heads and %d leaders; want 3 and 1:\n%v", len(st.Heads), leaders, r)
		}

		// The text form names the leader too.
		r = mantaCmd(t, env, "", "status")
		if r.code != 0 || !strings.Contains(r.stdout, "leader: "+st.Leader.ID) {
			t.Fatalf("status text does not name leader %s: %v", st.Leader.ID, r)
		}
	})

	t.Run("KVRoundTrip", func(t *testing.T) {
		ns := []string{"--namespace", "rt"}
		kv := func(stdin string, args ...string) result {
			return mantaCmd(t, env, stdin, append(append([]string{"kv"}, args...), ns...)...)
		}
		mustOK := func(r result) result {
			t.Helper()
			if r.code != 0 {
				t.Fatalf("%v", r)
			}
			return r
		}
		mustOK(kv("", "put", "app/a", "alpha"))
		mustOK(kv("from stdin\n", "put", "app/b", "-"))
		file := t.TempDir() + "/v"
		if err := writeFile(file, "from a file"); err != nil {
			t.Fatal(err)
		}
		mustOK(kv("", "put", "other", "--file", file))

		if r := mustOK(kv("", "get", "app/a")); r.stdout != "alpha" {
			t.Fatalf("get app/a = %q; want the raw value %q", r.stdout, "alpha")
		}
		if r := mustOK(kv("", "get", "app/b")); r.stdout != "from stdin\n" {
			t.Fatalf("get app/b = %q", r.stdout)
		}
		if r := mustOK(kv("", "get", "other")); r.stdout != "from a file" {
			t.Fatalf("get other = %q", r.stdout)
		}
		if r := mustOK(kv("", "list")); r.stdout != "app/a\napp/b\nother\n" {
			t.Fatalf("list = %q", r.stdout)
		}
		if r := mustOK(kv("", "list", "app/")); r.stdout != "app/a\napp/b\n" {
			t.Fatalf("list app/ = %q", r.stdout)
		}
		// The default namespace is another one.
		if r := mantaCmd(t, env, "", "kv", "get", "app/a"); r.code != 1 {
			t.Fatalf("get from the default namespace: %v; want NotFound", r)
		}

		if r := kv("", "put", "app/a", "changed", "--no-overwrite"); r.code != 1 || !strings.Contains(r.stderr, "AlreadyExists") {
			t.Fatalf("put --no-overwrite on an existing key: %v; want exit 1 AlreadyExists", r)
		}
		if r := mustOK(kv("", "get", "app/a")); r.stdout != "alpha" {
			t.Fatalf("--no-overwrite changed the value to %q", r.stdout)
		}

		mustOK(kv("", "del", "other"))
		r := kv("", "get", "other")
		if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "NotFound") {
			t.Fatalf("get of a deleted key: %v; want exit 1 and a NotFound message on stderr", r)
		}
		if r := kv("", "del", "other"); r.code != 1 {
			t.Fatalf("del of a missing key: %v; want exit 1", r)
		}
		if r := mustOK(kv("", "del", "app/", "--prefix")); !strings.Contains(r.stdout, "deleted 2") {
			t.Fatalf("del --prefix: %v", r)
		}
		if r := mustOK(kv("", "list")); r.stdout != "" {
			t.Fatalf("list after deleting all = %q", r.stdout)
		}
	})

	t.Run("WrongTokenIsUnauthenticatedAndWritesNothing", func(t *testing.T) {
		addr := []string{"--address", strings.Join(c.Addresses(), ",")}
		r := mantaCmd(t, nil, "", append([]string{"kv", "put", "--token", "not-the-token", "intruder", "x"}, addr...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "Unauthenticated") {
			t.Fatalf("put with a wrong token: %v; want exit 1 Unauthenticated", r)
		}
		r = mantaCmd(t, nil, "", append([]string{"kv", "get", "--token-file", c.TokenFile(), "intruder"}, addr...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "NotFound") {
			t.Fatalf("the rejected write is there: %v", r)
		}
		if r := mantaCmd(t, nil, "", append([]string{"status", "--token", "not-the-token"}, addr...)...); r.code == 0 {
			t.Fatalf("status with a wrong token succeeded: %v", r)
		}
	})

	t.Run("MissingAddressIsAClearError", func(t *testing.T) {
		r := mantaCmd(t, nil, "", "kv", "list", "--token", c.Token())
		if r.code == 0 || !strings.Contains(r.stderr, "--address") || !strings.Contains(r.stderr, "MANTA_ADDRESS") {
			t.Fatalf("kv list without an address: %v", r)
		}
	})

	t.Run("StartRefusesAnotherHeadsDataDir", func(t *testing.T) {
		h := c.Heads()[0]
		r := mantaCmd(t, nil, "", "start", "--head", "--node-id", "intruder", "--data-dir", h.DataDir,
			"--port", "0", "--no-raylet", "--log-level", "error")
		if r.code == 0 || !strings.Contains(r.stderr, `belongs to head "head-1"`) {
			t.Fatalf("start on head-1's data dir: %v; want a refusal naming head-1", r)
		}
	})

	t.Run("OperatorListPeersShowsThreeVoters", func(t *testing.T) {
		r := mantaCmd(t, env, "", "operator", "raft", "list-peers", "--json")
		if r.code != 0 {
			t.Fatalf("list-peers: %v", r)
		}
		peers := decodeJSON[[]peerReport](t, r)
		voters, leaders := 0, 0
		for _, p := range peers {
			if p.Suffrage == "Voter" {
				voters++
			}
			if p.Leader {
				leaders++
			}
		}
		if len(peers) != 3 || voters != 3 || leaders != 1 {
			t.Fatalf("peers %+v: want 3 voters, one of them leader", peers)
		}
	})

	t.Run("TransferLeader", func(t *testing.T) {
		leader := func() string {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, id, err := c.WaitLeader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		before := leader()
		if r := mantaCmd(t, env, "", "operator", "raft", "transfer-leader"); r.code != 0 {
			t.Fatalf("transfer-leader: %v", r)
		}
		eventually(t, 10*time.Second, "a new leader", func() bool {
			return leader() != before
		})
	})
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
