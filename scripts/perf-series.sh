#!/usr/bin/env bash
# The measurement series behind docs/performance.md, one run after the
# other on an idle machine (about 30 minutes); raw outputs go to
# docs/perf/.
set -u
cd "$(dirname "$0")/.."
mkdir -p tmp && go build -o tmp/hats-perf . || exit 1
export HATS_BIN=tmp/hats-perf
P=docs/perf
{ echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet -- . ':!docs' || echo ' +uncommitted')"; uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; free -g | head -2; go version; grep -E "hashicorp/raft |raft-boltdb|raft-wal|bbolt" go.mod; echo "load average: $(cat /proc/loadavg)"; } > $P/machine.txt
scripts/bench-cluster.sh "--clients 1 --duration 10s" "--clients 16 --duration 10s" "--clients 64 --duration 10s" "--clients 256 --duration 10s" > $P/hats-bench-orders.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s --stream" "--clients 16 --duration 10s --stream" "--clients 64 --duration 10s --stream" "--clients 256 --duration 10s --stream" > $P/hats-bench-stream.txt 2>&1
scripts/bench-cluster.sh "--clients 16 --duration 10s --stream --pipeline 8" "--clients 64 --duration 10s --stream --pipeline 8" "--clients 256 --duration 10s --stream --pipeline 8" "--clients 1024 --duration 10s --stream --pipeline 32" > $P/hats-bench-pipelined.txt 2>&1
N="--clients 256 --duration 10s --stream --pipeline 8"
scripts/bench-cluster.sh "$N --ndjson" "$N" "$N --ndjson" "$N" > $P/hats-bench-encodings.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s --mix deposit:100" "--clients 64 --duration 10s --mix deposit:100" "--clients 256 --duration 10s --mix deposit:100" > $P/hats-bench-deposits.txt 2>&1
go test -run '^$' -bench RawRaft -benchtime 5000x ./cluster_test > $P/rawraft.txt 2>&1
scripts/bench-cluster.sh "--clients 256 --duration 60s --stream --pipeline 8 --histogram $P/hats-bench-60s.html" > $P/hats-bench-60s.txt 2>&1
scripts/bench-cluster.sh "--clients 256 --duration 60s --stream --pipeline 8 --histogram $P/hats-bench-60s-2.html" > $P/hats-bench-60s-2.txt 2>&1
scripts/bench-cluster.sh "--clients 64 --duration 60s --stream --pipeline 8 --rate 4000" > $P/hats-bench-60s-open-4k.txt 2>&1
scripts/bench-cluster.sh "--clients 64 --duration 60s --stream --pipeline 8 --rate 6000" > $P/hats-bench-60s-open-6k.txt 2>&1
scripts/bench-cluster.sh "--clients 64 --duration 60s --stream --pipeline 8 --rate 7000" > $P/hats-bench-60s-open-7k.txt 2>&1
scripts/bench-cluster.sh "--clients 64 --duration 60s --stream --pipeline 8 --rate 8000" > $P/hats-bench-60s-open-8k.txt 2>&1
scripts/bench-cluster.sh "--clients 128 --duration 60s --stream --pipeline 8" > $P/hats-bench-60s-128.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s --via leader" "--clients 1 --duration 10s --via followers" "--clients 1 --duration 10s --stream --via leader" "--clients 1 --duration 10s --stream --via followers" "--clients 1 --duration 10s --via leader" "--clients 1 --duration 10s --via followers" > $P/hats-bench-1client.txt 2>&1
go test -run XXX -bench 'ApplyOrders' -benchtime 2000x -count 3 ./fsm > $P/fsm-bench.txt 2>&1
A="--clients 256 --duration 10s --stream --pipeline 8"
KILL_LEADER_AFTER=4 scripts/bench-cluster.sh "$A" "$A" "$A" "$A" "$A" "$A" "$A" "$A" > $P/failover.txt 2>&1
echo "# $(date -u +%FT%TZ) done" >> $P/machine.txt
