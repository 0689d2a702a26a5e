GO ?= go
PKGS := ./...
# Packages whose tests fit -race on a 2-core CI machine.
RACE_PKGS := ./internal/... ./controlplane/... ./objectstore/... ./raylet/... ./sdk/... ./sim/...
# client-go takes minutes to build with -race on 2 cores: the Kubernetes
# provider's tests run without it, beside cmd/manta (which links it too).
K8S_PKGS := ./controlplane/autoscaler/kubeprovider

.PHONY: build test test-short vet fmt proto bench bench-failover bench-kv bench-writes bench-data bench-scale bench-actors bench-serve tools chaos fuzz

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo "gofmt needed"; exit 1)

# The whole suite: vet, unit and in-process cluster tests with -race, then the
# multi-process tests (which build and start real manta binaries).
test: vet
	@test -x .venv/bin/ray || echo "note: no .venv/bin/ray: TestRayClientCompatibility (Ray's own job clients against manta) will be skipped; .ci/run creates the virtualenv"
	@test -x /usr/bin/chromium || echo "note: no /usr/bin/chromium: the dashboard's browser tests will be skipped; .ci/run installs it"
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list $(RACE_PKGS) | grep -v /kubeprovider)
	$(GO) test -count=1 -timeout 15m $(K8S_PKGS) $$($(GO) list ./... | grep -v -e /internal/ -e /controlplane/ -e /objectstore -e /raylet -e /sdk/ -e /sim$$)

test-short:
	$(GO) test -short -count=1 ./...

# Regenerates the committed protobuf code. Needs protoc (Debian's
# protobuf-compiler) and the two plugins, which `make tools` installs.
proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/controlpb/*.proto proto/rayletpb/*.proto

tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.11
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0

bench: bench-kv bench-failover

bench-kv:
	$(GO) run ./cmd/manta bench kv --clients 64 --duration 10s

# The control-plane write path, boltdb and wal log stores side by side:
# KV writes (tight loop, then a user-shaped paced load), lineage records,
# and raw Raft on this machine in the same run (shared/baselines/raft).
bench-writes:
	$(GO) build -o bin/manta ./cmd/manta
	for s in boltdb wal; do \
		./bin/manta bench kv --clients 64 --duration 10s --raft-log-store $$s; \
		./bin/manta bench kv --clients 256 --rate 1500 --duration 10s --raft-log-store $$s; \
		./bin/manta bench lineage --rounds 3 --raft-log-store $$s; \
	done
	-cd /work/shared/baselines/raft && $(GO) run . -mode=apply -dur=10s && $(GO) run . -mode=apply -dur=10s -workers=4 -batch=2048

bench-failover:
	$(GO) run ./cmd/manta bench failover --reps 5

# sdk/data: MapBatches against a plain Go loop, the disk's write speed,
# sorts of 1 and 10 GB on 2 nodes of 512 MiB stores (spilling), streaming
# 4x the store, and the 2 GB cluster sort and groupby test.
bench-data:
	$(GO) run ./cmd/manta bench data --what mapbatches --size 512MiB
	$(GO) run ./cmd/manta bench data --what disk --size 1GiB
	$(GO) run ./cmd/manta bench data --what sort --size 1GiB --store 512MiB --nodes 2
	$(GO) run ./cmd/manta bench data --what sort --size 10GiB --store 512MiB --nodes 2
	$(GO) run ./cmd/manta bench data --what stream --size 2GiB --store 512MiB --nodes 2
	$(GO) test -count=1 -timeout 60m ./sdk/data -run TestClusterSortSpills -data.sort-bytes=2147483648

# Simulated raylets (sim/) against a fresh 3-head cluster per fleet size:
# leader CPU and RSS, heartbeat RTT, RPC rate, write latency, a flooding
# node, failover. Then the same with whole-list view refreshes (the old way).
# Serve: a no-op deployment through the proxy against plain net/http
# (closed loop, 32 clients), user-shaped load (5-50 ms handlers at 100/s),
# and the time of a rolling update of 4 replicas.
bench-serve:
	$(GO) test ./sdk/serve -run '^$$' -bench 'Noop' -benchtime 50000x -count 3
	$(GO) test ./sdk/serve -run '^$$' -bench 'Work|RollingUpdate' -benchtime 1x -count 3

bench-scale:
	$(GO) build -o bin/manta ./cmd/manta
	./bin/manta bench scale --nodes 100,500,1000 --flood
	./bin/manta bench scale --nodes 100,500,1000 --full-views --failover=false

# Many actors: 10,000 placed by the leader on 200 simulated nodes (then a
# leader failover, no actor may restart); real actor processes on one
# raylet (100-1,600, stopping before the box runs short of memory); a
# million queued tasks (driver memory); 10,000 uneven CPU-spin tasks
# submitted over time on 2 nodes of 1 CPU (throughput against the ideal).
bench-actors:
	$(GO) build -o bin/manta ./cmd/manta
	./bin/manta bench actors --actors 1000,10000 --nodes 200
	./bin/manta bench actor-procs --actors 100,200,400,800,1600
	./bin/manta bench tasks --tasks 1000000 --live-heap
	./bin/manta bench work --tasks 10000

# Every chaos scenario for a minute each (make test runs a short smoke).
# Partitions need root and iptables.
# Head scenarios run without raylets; the task ones and mixed with two.
CHAOS_SCENARIOS := leader-kill follower-kill leader-pause partition-minority rolling-restart
CHAOS_TASK_SCENARIOS := raylet-kill worker-kill mixed
# Network faults need each head and raylet on a host of its own (netns,
# as root); each runs with seeds 1-3, and mixed once more with them.
CHAOS_NETNS_SCENARIOS := slow-leader lossy-links asymmetric-partition
# CHAOS_FLAGS=--tls runs every scenario on a mutual-TLS cluster.
CHAOS_FLAGS ?=
chaos:
	$(GO) build -o bin/manta ./cmd/manta
	for s in $(CHAOS_SCENARIOS); do \
		./bin/manta chaos run $(CHAOS_FLAGS) --scenario $$s --duration 60s --seed 1 --report chaos-reports/$$s --force || exit 1; \
	done
	for s in $(CHAOS_TASK_SCENARIOS); do \
		./bin/manta chaos run $(CHAOS_FLAGS) --scenario $$s --nodes 2 --duration 60s --seed 1 --report chaos-reports/$$s --force || exit 1; \
	done
	for s in $(CHAOS_NETNS_SCENARIOS); do for seed in 1 2 3; do \
		./bin/manta chaos run $(CHAOS_FLAGS) --hosts netns --scenario $$s --nodes 2 --duration 60s --seed $$seed --report chaos-reports/netns-$$s-$$seed --force || exit 1; \
	done; done
	./bin/manta chaos run $(CHAOS_FLAGS) --hosts netns --scenario mixed --nodes 2 --duration 60s --seed 1 --report chaos-reports/netns-mixed --force

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target at a
# time). Their seed corpora (f.Add and testdata/fuzz) run in every go test.
FUZZTIME ?= 60s
FUZZ_TARGETS := \
	./controlplane/fsm:FuzzApplyNeverPanics \
	./controlplane/head:FuzzHeadRequests \
	./controlplane/jobsapi:FuzzSubmitBody \
	./internal/pkgstore:FuzzUnpack \
	./raylet:FuzzChunkDecode
fuzz:
	for t in $(FUZZ_TARGETS); do \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" || exit 1; \
	done
