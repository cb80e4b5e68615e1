# HATS developer recipes. `just --list` shows them all.

# Build the hats binary into ./bin/hats.
build:
    go build -o bin/hats .

# Run the default test suite (the README's test command; what CI runs).
test:
    go test -race -count=1 ./...

# Run the tests with the race detector, several times, to shake out flakes.
race count="3":
    go test -race -count={{count}} ./...

# Static checks.
vet:
    go vet ./...

# Format the code.
fmt:
    gofmt -w .

# Fail if any file is not gofmt-clean, then vet.
lint:
    test -z "$(gofmt -l .)" || (gofmt -l . && exit 1)
    go vet ./...

# Start a local 3-node cluster on loopback (Ctrl-C stops it).
cluster:
    go run . demo

# Start a cluster first (`just cluster`, then export the HATS_CLUSTER and
# HATS_INSECURE it prints); extra args go to hats bench, e.g.
# `just bench 64 15s --mix deposit:100 --json`. See docs/performance.md.
# Load-test a running cluster with hats bench.
bench clients="16" duration="10s" *args:
    go run . bench --clients {{clients}} --duration {{duration}} {{args}}

# A fresh 3-node cluster of real processes, one hats bench run per quoted
# argument set, then stop (scripts/bench-cluster.sh; docs/performance.md).
# `just bench-cluster "--clients 256 --duration 10s --stream --pipeline 8"`
[positional-arguments]
bench-cluster +runs:
    scripts/bench-cluster.sh "$@"

# Failover under load: as bench-cluster, killing the leader 4 s into each run.
bench-failover rounds="5":
    bash -c 'A="--clients 256 --duration 10s --stream --pipeline 8"; r=(); for i in $(seq 1 {{rounds}}); do r+=("$A"); done; KILL_LEADER_AFTER=4 scripts/bench-cluster.sh "${r[@]}"'

# The bare-Raft reference: hashicorp/raft alone, 3 nodes on loopback, fsync on, 100-byte entries.
bench-raw time="3s":
    go test -run '^$' -bench RawRaft -benchtime {{time}} ./cluster_test

# In-process benchmarks of the write path and the state machine (restart runs once).
bench-go time="3s":
    go test -run '^$' -bench . -skip Restart -benchtime {{time}} ./cluster_test ./fsm
    go test -run '^$' -bench Restart -benchtime 1x ./cluster_test

# Fuzz the command decoder for a while.
fuzz time="60s":
    go test -run '^$' -fuzz FuzzDecode -fuzztime {{time}} ./fsm

# Long randomized chaos campaign: in-process clusters behind the fault-
# injecting network, random faults and scenarios under trading load, every
# checker after each round. Writes tmp/chaos-report-<time>.md (see
# docs/chaos.md). Replay a campaign with HATS_CHAOS_SEED=<seed>; run it over
# TLS with HATS_CHAOS_TLS=1 (HATS_CHAOS_TLS=1 just chaos 5m).
chaos duration="30m":
    mkdir -p {{justfile_directory()}}/tmp
    HATS_CHAOS_DURATION={{duration}} HATS_CHAOS_REPORT={{justfile_directory()}}/tmp/chaos-report-$(date -u +%Y%m%dT%H%M%SZ).md go test -race -count=1 -timeout 24h -run '^TestChaos_LongCampaign$' -v ./cluster_test
