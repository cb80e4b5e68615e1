#!/usr/bin/env bash
# base vs head, leadership transferred 10 s into a 30 s run at 256 clients / 8 streams
cd /work/main
for r in 1 2; do
  for bin in tmp/s16/hats-base tmp/s16/hats-head; do
    echo "## round $r bin $bin"
    HATS_BIN=$bin TRANSFER_LEADER_AFTER=10 scripts/bench-cluster.sh "--clients 256 --duration 30s --stream --pipeline 32" 2>&1 |
      grep -E "^(throughput|latency|longest gap|leader  |# node CPU|# hats bench CPU|operations|hats bench run|# [0-9:.]+ )"
  done
done
echo done
