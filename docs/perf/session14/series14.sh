#!/usr/bin/env bash
# Session 14 measurement series (a subset of scripts/perf-series.sh), raw outputs in docs/perf/session14/.
set -u
cd "$(dirname "$0")/.."
go build -o tmp/hats-perf . || exit 1
export HATS_BIN=tmp/hats-perf
P=${P:-docs/perf/session14} # session 15 ran it with P=docs/perf/session15
{ echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)$(git diff --quiet -- . ':!docs' || echo ' +uncommitted')"; uname -a; nproc; grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu MHz" /proc/cpuinfo; free -g | head -2; go version; grep -E "hashicorp/raft |raft-boltdb|raft-wal|bbolt" go.mod; echo "load average: $(cat /proc/loadavg)"; } > $P/machine.txt
go test -c -o tmp/ct.test ./cluster_test && (cd cluster_test && ../tmp/ct.test -test.run '^$' -test.bench RawRaft -test.benchtime 5000x) > $P/rawraft.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s" "--clients 16 --duration 10s" "--clients 64 --duration 10s" "--clients 256 --duration 10s" > $P/hats-bench-orders.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s --stream" "--clients 16 --duration 10s --stream" "--clients 64 --duration 10s --stream" "--clients 256 --duration 10s --stream" > $P/hats-bench-stream.txt 2>&1
scripts/bench-cluster.sh "--clients 16 --duration 10s --stream --pipeline 8" "--clients 64 --duration 10s --stream --pipeline 8" "--clients 256 --duration 10s --stream --pipeline 32" > $P/hats-bench-pipelined.txt 2>&1
scripts/bench-cluster.sh "--clients 256 --duration 60s --stream --pipeline 32 --histogram $P/hats-bench-60s-p32.html" > $P/hats-bench-60s-p32.txt 2>&1
scripts/bench-cluster.sh "--clients 128 --duration 60s --stream --pipeline 32" > $P/hats-bench-60s-128-p32.txt 2>&1
scripts/bench-cluster.sh "--clients 1 --duration 10s --stream" "--clients 1 --duration 10s --stream --via leader" "--clients 1 --duration 10s --stream --via followers" "--clients 1 --duration 10s --via leader" "--clients 1 --duration 10s --via followers" > $P/hats-bench-1client.txt 2>&1
A="--clients 256 --duration 10s --stream --pipeline 32"
KILL_LEADER_AFTER=4 scripts/bench-cluster.sh "$A" "$A" "$A" "$A" "$A" "$A" > $P/failover.txt 2>&1
go test -c -o tmp/fsm-perf.test ./fsm && (cd fsm && ../tmp/fsm-perf.test -test.run XXX -test.bench 'ApplyOrders/packed' -test.benchtime 4000x -test.count 3 && ../tmp/fsm-perf.test -test.run XXX -test.bench 'ApplyOrders/lone' -test.benchtime 1000x -test.count 3) > $P/fsm-bench.txt 2>&1
echo "# $(date -u +%FT%TZ) done" >> $P/machine.txt
